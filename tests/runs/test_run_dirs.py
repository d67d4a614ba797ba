"""What a single-analysis script may do to its --out, and how it treats the run directories it reads: nothing
deleted that the command did not write, a second identical run reused, an input run checked against the run's
models."""

import json
import os

import pytest

from analyses.activation_patching import main as patch_main
from analyses.gradient_trace import main as trace_main
from analyses.head_ablation import main as heads_main


def _tree(path):
    return sorted((str(p.relative_to(path)), p.stat().st_size) for p in path.rglob("*"))


def test_overwrite_never_deletes_what_the_command_did_not_write(tiny_dirs, tiny_data, tmp_path, capsys):
    repro = tmp_path / "repro"      # the shape of a reproduction folder: run.json, stage folders, models
    for d in ("data", "mixed/model", "trace-mixed/figures"):
        (repro / d).mkdir(parents=True)
    (repro / "run.json").write_text('{"preset": "cpu"}')
    (repro / "mixed" / "model" / "model.safetensors").write_bytes(b"x" * 1000)
    (repro / "trace-mixed" / "config.json").write_text("{}")
    before = _tree(repro)
    args = ["--model", str(tiny_dirs["tiny-llama"]), "--data", str(tiny_data), "--pairs", "1", "--split", "all",
            "--no-progress"]
    for extra in ([], ["--overwrite"]):
        assert patch_main([*args, "--out", str(repro), *extra]) == 2
        err = capsys.readouterr().err
        assert "is not a run directory of this command" in err and err.count("\n") == 1
        assert _tree(repro) == before
    # a folder of ours with a file of someone else's in it is not replaced either
    assert patch_main([*args, "--out", str(tmp_path / "p")]) == 0
    (tmp_path / "p" / "notes.txt").write_text("mine")
    assert patch_main([*args, "--out", str(tmp_path / "p"), "--overwrite"]) == 2
    assert "holds notes.txt" in capsys.readouterr().err and (tmp_path / "p" / "notes.txt").is_file()


def test_a_second_identical_run_is_reused_and_a_different_one_refused(tiny_dirs, tiny_data, tmp_path, capsys, caplog):
    args = ["--model", str(tiny_dirs["tiny-llama"]), "--data", str(tiny_data), "--split", "all", "--no-progress",
            "--out", str(tmp_path / "p")]
    assert patch_main([*args, "--pairs", "1"]) == 0
    summary = tmp_path / "p" / "summary.json"
    stamp = summary.stat().st_mtime_ns
    with caplog.at_level("INFO"):
        assert patch_main([*args, "--pairs", "1"]) == 0                 # the same command: reported and reused
    assert summary.stat().st_mtime_ns == stamp and "complete: reused" in caplog.text
    assert patch_main([*args, "--pairs", "2"]) == 2                     # other options: refused, naming them
    assert "config.n_pairs" in capsys.readouterr().err and summary.stat().st_mtime_ns == stamp
    assert patch_main([*args, "--pairs", "2", "--overwrite"]) == 0      # ... unless asked to recompute
    assert json.loads(summary.read_text())["corrupted_metric"].__len__() == 2


def test_an_input_run_of_another_model_or_cut_in_half_is_refused(tiny_dirs, tiny_data, tmp_path, capsys):
    base = str(tiny_dirs["tiny-llama"])
    from recall_circuits.training.loop import TrainConfig, train

    ft = str(train(TrainConfig(model=base, strategy="mixed", data=str(tiny_data), out=str(tmp_path / "ft"), epochs=1,
                               checkpoint_every=0), verbose=False))
    trace = ["--data", str(tiny_data), "--people", "2", "--no-ablation", "--no-progress"]
    assert trace_main(["--base", base, "--finetuned", base, *trace, "--out", str(tmp_path / "t-other")]) == 0
    assert trace_main(["--base", base, "--finetuned", ft, *trace, "--out", str(tmp_path / "t")]) == 0
    heads = ["--base", base, "--finetuned", ft, "--data", str(tiny_data), "--grid", "0,1", "--n-random", "1",
             "--no-progress"]
    assert heads_main([*heads, "--out", str(tmp_path / "h1"), "--trace-dir", str(tmp_path / "t-other")]) == 2
    err = capsys.readouterr().err
    assert "was computed on another finetuned model" in err and not (tmp_path / "h1").exists()
    summary = tmp_path / "t" / "summary.json"
    summary.write_text(summary.read_text()[: os.path.getsize(summary) // 2])
    assert heads_main([*heads, "--out", str(tmp_path / "h2"), "--trace-dir", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert f"{summary} is corrupted" in err and err.count("\n") == 1 and not (tmp_path / "h2").exists()


@pytest.mark.parametrize("what", ["grafting"])
def test_grafting_checks_its_trace_dir_too(what, tiny_dirs, tiny_data, tmp_path, capsys):
    from analyses.grafting import main as graft_main

    base = str(tiny_dirs["tiny-llama"])
    trace = ["--data", str(tiny_data), "--people", "2", "--no-ablation", "--no-progress"]
    assert trace_main(["--base", base, "--finetuned", base, *trace, "--out", str(tmp_path / "t-other")]) == 0
    other = str(tiny_dirs["tiny-gpt2"])
    assert graft_main(["--base", other, "--finetuned", other, "--data", str(tiny_data), "--out", str(tmp_path / "g"),
                       "--trace-dir", str(tmp_path / "t-other"), "--no-progress"]) == 2
    assert "was computed on another" in capsys.readouterr().err and not (tmp_path / "g").exists()
