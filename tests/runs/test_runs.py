"""Runs a user can trust: interrupted runs resume with the same command, changed inputs are never silently reused,
corrupted artefacts and bad values are one-line errors that leave nothing behind, Ctrl-C says how to resume."""

import json

import pytest

from recall_circuits.artefacts import code_identity

from analyses.reproduce import main as reproduce_main


def _interrupt_after(monkeypatch, n_calls):
    """Ctrl-C during fine-tuning, after ``n_calls`` training forwards (before any checkpoint of the tiny preset)."""
    import recall_circuits.training.loop as training

    real, calls = training.token_loss_sum, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) > n_calls:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "token_loss_sum", flaky)


@pytest.mark.slow
def test_quick_run_interrupted_resumes_and_refuses_changed_inputs(tmp_path, monkeypatch, capsys):
    out = tmp_path / "r"
    # in this process (--no-side-by-side), where the patched loss can interrupt it; the children's resume is in
    # tests/runs/test_side_by_side.py
    argv = ["--quick", "--out", str(out), "--no-progress", "--no-side-by-side"]
    _interrupt_after(monkeypatch, 3)
    assert reproduce_main(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("interrupted: run the same command again to resume")
    assert (out / "two-stage").is_dir() and not (out / "two-stage" / "checkpoint").exists()
    monkeypatch.undo()
    assert reproduce_main(argv) == 0                     # the same command: fine-tuning starts again, then the rest
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"]["base"]["name"] == "tiny-llama" and summary["data"]["config"]["n_people"] == 24
    assert "tiny-llama" in (out / "report.html").read_text()
    capsys.readouterr()

    # another model into the same run: refused before any work, naming what differs, and nothing changed
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.json")}
    assert reproduce_main([*argv, "--model", "tiny-gpt2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different model" in err[0] and "tiny-gpt2" in err[0] and "--overwrite" in err[0]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.json")} == before

    # a stage whose model changed underneath it (the fine-tuned weights were replaced): refused, never reused
    ident = json.loads((out / "attention" / "identity.json").read_text())
    ident["models"]["mixed"]["sha256"]["model.safetensors"] = "0" * 64
    (out / "attention" / "identity.json").write_text(json.dumps(ident))
    assert reproduce_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "attention was computed from a different models.mixed.sha256" in err[0]

    # a stage computed by another version of the library's code: refused, naming it
    good = json.loads((out / "attention" / "identity.json").read_text())
    assert good["code"] == code_identity()
    (out / "attention" / "identity.json").write_text(json.dumps(good | {"code": "0" * 64}))
    assert reproduce_main(argv) == 2
    assert "attention was computed from a different code" in capsys.readouterr().err

    # --report-only computes nothing: the summary and report again, the stage computed by other code named
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.name not in ("summary.json", "report.html")}
    assert reproduce_main([*argv, "--report-only"]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")
            if p.name not in ("summary.json", "report.html")} == before
    again = json.loads((out / "summary.json").read_text())
    assert again["stale"] == {"attention": "code"} and again["directions"] == summary["directions"]
    assert "Rendered from stages computed from other inputs" in (out / "report.html").read_text()
    models = {k: v for s in ("mixed", "two-stage")
              for k, v in json.loads((out / f"consistency-{s}" / "identity.json").read_text())["models"].items()}
    good["models"] = models | {"pretrained": ident["models"]["pretrained"]}      # the true weights again
    (out / "attention" / "identity.json").write_text(json.dumps(good))
    assert reproduce_main([*argv, "--report-only"]) == 0
    assert json.loads((out / "summary.json").read_text())["stale"] == {}
    capsys.readouterr()
    assert reproduce_main(["--quick", "--out", str(tmp_path / "none"), "--no-progress", "--report-only"]) == 2
    assert "holds no reproduction" in capsys.readouterr().err and not (tmp_path / "none").exists()

    # a truncated summary inside a stage: one line naming the file
    text = (out / "trace-mixed" / "summary.json").read_text()
    (out / "trace-mixed" / "summary.json").write_text(text[: len(text) // 2])
    assert reproduce_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trace-mixed/summary.json is corrupted" in err[0]


def test_reproduce_refuses_a_folder_that_is_not_a_reproduction(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep me")
    assert reproduce_main(["--quick", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "holds no reproduction" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_finetune_resume_without_checkpoint_restarts(tiny_data, tmp_path, monkeypatch, capsys):
    from analyses.finetune import main

    argv = ["--preset", "tiny", "--strategy", "mixed", "--data", str(tiny_data), "--out", str(tmp_path / "ft"),
            "--no-progress"]
    _interrupt_after(monkeypatch, 2)
    assert main(argv) == 130
    assert "run the same command again" in capsys.readouterr().err
    monkeypatch.undo()
    assert main([*argv, "--resume"]) == 0
    assert (tmp_path / "ft" / "results.json").is_file()
    # resuming with another option is refused, naming it
    assert main([*argv, "--resume", "--lr", "0.01"]) == 2
    assert "different options.lr" in capsys.readouterr().err


@pytest.mark.parametrize("pairs", ["0", "100000"])
def test_patching_pair_count_out_of_range(tiny_dirs, tiny_data, tmp_path, capsys, pairs):
    from analyses.activation_patching import main

    out = tmp_path / "p"
    assert main(["--model", str(tiny_dirs["tiny-llama"]), "--data", str(tiny_data), "--out", str(out),
                 "--pairs", pairs]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--pairs" in err[0] and not out.exists()


def test_a_run_directory_of_an_interrupted_run_is_redone_not_refused(tmp_path):
    from recall_circuits.artefacts import CONFIG_FILE, SUMMARY_FILE, check_run_dir, start_run
    from recall_circuits.errors import RecallCircuitsError

    run = start_run(tmp_path / "a", {"x": 1})
    (run / "half.safetensors").write_bytes(b"partial")
    start_run(tmp_path / "a", {"x": 2})                 # no summary.json: interrupted, redone
    assert sorted(p.name for p in run.iterdir()) == [CONFIG_FILE]
    (run / SUMMARY_FILE).write_text("{}")
    with pytest.raises(RecallCircuitsError, match="complete run"):
        check_run_dir(run)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("x")
    with pytest.raises(RecallCircuitsError, match="not a run directory"):
        check_run_dir(tmp_path / "b")


def test_code_identity_follows_the_library_source_only(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    first = code_identity(pkg)
    (pkg / "README.md").write_text("docs do not count")
    assert code_identity(pkg) == first
    (pkg / "sub" / "b.py").write_text("y = 3\n")
    assert code_identity(pkg) != first
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    (pkg / "sub" / "b.py").rename(pkg / "b.py")            # the same bytes elsewhere is other code
    assert code_identity(pkg) != first
    (pkg / "b.py").rename(pkg / "sub" / "b.py")
    (pkg / "runs").mkdir()
    for name in ("report.py", "verdicts.py"):              # the report's presentation is no stage's code
        (pkg / "runs" / name).write_text("z = 1\n")
        assert code_identity(pkg) == first
    (pkg / "runs" / "pipeline.py").write_text("z = 1\n")
    assert code_identity(pkg) != first
