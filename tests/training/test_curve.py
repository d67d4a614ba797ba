"""Learning curves (recall_circuits.training.curve): every point is the evaluation of that checkpoint, the last one is
the run's own final evaluation, a run that learns its questions shows it, and an interrupted curve resumes."""

from __future__ import annotations

import json

import pytest

import recall_circuits as rc
import recall_circuits.training.evaluation as ev_mod
from recall_circuits.data.bios import load_dataset
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.models.loading import load_hf
from recall_circuits.runs.stages.finetune import run_finetune
from recall_circuits.training.evaluation import evaluate


@pytest.fixture(scope="module")
def learned_run(tiny_dirs, tiny_data, tmp_path_factory):
    """A tiny two-stage run that learns its trained questions (QA-ID rises during the QA phase), with snapshots."""
    out = tmp_path_factory.mktemp("curve") / "two-stage"
    res = run_finetune(dict(model=str(tiny_dirs["tiny-llama"]), strategy="two-stage", data=str(tiny_data),
                            out=str(out), epochs=20, lr=3e-3, batch_size=8, checkpoint_every=0, snapshot_every=20),
                       verbose=False)
    return out, res


def test_points_are_each_checkpoints_evaluation(learned_run, tiny_data, tmp_path):
    out, res = learned_run
    c = rc.learning_curve(out, cache=tmp_path / "points")
    snaps = sorted(int(p.name.split("-")[1]) for p in (out / "snapshots").iterdir())
    assert c.step == sorted(set(snaps) | {res["steps"]}) and c.step[-1] == res["steps"]
    # the phases come from the metrics: BIO first, then QA
    assert c.phase[0] == "bio" and c.phase[-1] == "qa" and c.phase == sorted(c.phase)
    # reference: evaluate the checkpoint directly
    ds = load_dataset(tiny_data)
    i = len(c.step) // 2
    model, tok = load_hf(c.path[i])
    assert c.evaluation[i] == evaluate(model, tok, ds, bio=False, floor=True).to_dict()
    # the last point is the run's own final evaluation (results.json)
    for k in ("qa_id_acc", "qa_ood_acc", "qa_id_first_token_acc", "qa_ood_per_person", "qa_floor_per_person"):
        assert c.evaluation[-1][k] == res[k], k
    # known answer: the run learns its trained questions, and the curve shows it
    df = c.to_dataframe().query("measure == 'qa_id'")
    assert df["acc"].iloc[0] < 0.2 and res["qa_id_acc"] == df["acc"].iloc[-1] >= 0.9
    assert (df["low"] <= df["acc"]).all() and (df["acc"] <= df["high"]).all()
    assert set(c.to_dataframe()["measure"]) == {"qa_id", "qa_ood", "qa_floor"}


def test_cache_reuses_and_resumes(learned_run, tmp_path, monkeypatch):
    out, _ = learned_run
    first = rc.learning_curve(out, cache=tmp_path / "points")
    calls, orig = [], ev_mod.evaluate

    def counting(*a, **k):
        calls.append(1)
        return orig(*a, **k)

    monkeypatch.setattr(ev_mod, "evaluate", counting)
    assert rc.learning_curve(out, cache=tmp_path / "points") == first and not calls
    # an interruption loses the points not yet written: only those are measured again
    kept = sorted((tmp_path / "points").glob("step-*.json"))
    kept[1].unlink()
    assert rc.learning_curve(out, cache=tmp_path / "points") == first and len(calls) == 1
    # a point measured with other options (or another checkpoint or dataset) is not reused
    f = kept[2]
    d = json.loads(f.read_text())
    d["key"]["bio"] = True
    f.write_text(json.dumps(d))
    assert rc.learning_curve(out, cache=tmp_path / "points") == first and len(calls) == 2


def test_script_writes_summary_figure_and_refuses_bad_input(learned_run, tmp_path, capsys):
    out, res = learned_run
    dest = tmp_path / "curve"
    from analyses.learning_curve import main

    assert main(["--no-progress", "--out", str(dest), "--runs", f"two-stage={out}"]) == 0
    summary = json.loads((dest / "summary.json").read_text())
    points = summary["runs"]["two-stage"]["points"]
    last = [p for p in points if p["measure"] == "qa_ood"][-1]
    assert last["step"] == res["steps"] and last["acc"] == res["qa_ood_acc"]
    assert (dest / "figures" / "learning_curve.html").is_file()
    assert (dest / "figures" / "training_loss.html").is_file()
    windows = summary["runs"]["two-stage"]["loss_windows"]
    assert sum(w["n"] for w in windows) == res["steps"] and {w["format"] for w in windows} == {"bio", "qa"}
    assert rc.LearningCurve.load(dest / "two-stage").step[-1] == res["steps"]
    # a finished run is not overwritten; bad input is one line, before anything is written
    # the same command again: its points are reused and the same summary written (a run may have grown snapshots)
    assert main(["--no-progress", "--out", str(dest), "--runs", f"two-stage={out}"]) == 0
    assert json.loads((dest / "summary.json").read_text()) == summary
    for args, msg in [(["--runs", f"renamed={out}"], "complete run"),
                      (["--runs", f"x={tmp_path}"], "neither snapshots"),
                      (["--runs", f"points={out}"], "not allowed"),
                      (["--runs", f"a={out}", f"a={out}"], "distinct"),
                      (["--runs", f"a={out}", "--batch-size", "0"], "batch size")]:
        other = tmp_path / "other"
        assert main(["--no-progress", "--out", str(dest if msg == "complete run" else other), *args]) == 2
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1, (args, err)
        assert not other.exists()
    with pytest.raises(RecallCircuitsError, match="neither snapshots"):
        rc.run_points(tmp_path)


def _write_log(run, records, tail=""):
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def test_training_log_windows_match_a_slow_reference_and_find_a_planted_spike(tmp_path):
    """Known answer: a constant-rate run whose QA loss falls to near zero and comes back up in its last 10 steps
    (planted) shows it in its last window, and the same log without the spike does not; every window equals a
    plain loop over the records."""
    import random

    rng = random.Random(0)
    recs = []
    for step in range(1, 101):
        fmt = "bio" if step % 5 == 0 else "qa"
        loss = 2.0 / step + rng.random() * 1e-3
        recs.append({"step": step, "phase": "mixed", "phase_step": step, "format": fmt, "loss": loss, "lr": 5e-4})
    spiked = [dict(r, loss=r["loss"] + (2.5 if r["step"] > 90 and r["format"] == "qa" else 0.0)) for r in recs]
    _write_log(tmp_path / "flat", recs)
    _write_log(tmp_path / "spike", spiked)
    for name, records in (("flat", recs), ("spike", spiked)):
        lg = rc.training_log(tmp_path / name)
        assert lg.step == list(range(1, 101)) and lg.format[:5] == ["qa"] * 4 + ["bio"]
        w = lg.windows(25)
        assert list(w.columns) == ["first_step", "last_step", "format", "n", "mean", "max"] and len(w) == 8
        for row in w.itertuples():           # the slow reference
            xs = [r["loss"] for r in records if row.first_step <= r["step"] <= row.last_step
                  and r["format"] == row.format]
            assert (row.n, row.last_step - row.first_step) == (len(xs), 24)
            assert row.mean == pytest.approx(sum(xs) / len(xs), rel=1e-12) and row.max == max(xs)
    last = {n: rc.training_log(tmp_path / n).windows(25).query("format == 'qa'")["mean"].tolist() for n in
            ("flat", "spike")}
    assert last["spike"][-1] > 10 * last["spike"][-2] > 0       # the spike is found in the last window
    assert last["flat"][-1] < last["flat"][-2]                   # and its absence is not mistaken for one
    fig = rc.loss_figure({n: rc.training_log(tmp_path / n) for n in ("flat", "spike")}, every=10)
    assert len(fig.data) == 8 and max(fig.data[6]["y"]) > 2.5 > max(fig.data[2]["y"])   # spike qa max vs flat


def test_training_log_reads_resumed_and_running_logs_and_refuses_bad_input(tmp_path):
    """A resumed run that logged a step twice keeps the last record; the line a running run is writing is skipped;
    a broken line elsewhere, a folder without a log and a bad window are one-line errors. The log round-trips."""
    recs = [{"step": s, "phase": "bio", "format": "bio", "loss": s, "lr": 1e-3 if s > 1 else 0} for s in (1, 2, 3)]
    _write_log(tmp_path / "r", [*recs, dict(recs[2], loss=30.0), {"step": 4, "phase": "qa", "loss": 4.0}],
               tail='{"step": 5, "lo')
    lg = rc.training_log(tmp_path / "r")
    assert lg.step == [1, 2, 3, 4] and lg.loss == [1.0, 2.0, 30.0, 4.0] and lg.format == ["bio"] * 3 + [None]
    assert lg.lr == [0.0, 1e-3, 1e-3, None] and isinstance(lg.lr[0], float)      # an integer in the log: a float
    w = lg.windows(2)
    assert w[["first_step", "format", "n", "mean"]].values.tolist() == [[1, "bio", 2, 1.5], [3, "all", 1, 4.0],
                                                                        [3, "bio", 1, 30.0]]
    lg.save(tmp_path / "saved")
    assert rc.TrainingLog.load(tmp_path / "saved") == lg
    _write_log(tmp_path / "bad", recs, tail="not json\n" + json.dumps(recs[0]) + "\n")
    with pytest.raises(RecallCircuitsError, match="line 4 is not JSON"):
        rc.training_log(tmp_path / "bad")
    with pytest.raises(RecallCircuitsError, match="has no metrics.jsonl"):
        rc.training_log(tmp_path / "none")
    for every in (0, -3, True):
        with pytest.raises(RecallCircuitsError, match="whole number of steps"):
            lg.windows(every)


def test_training_log_of_a_real_run(learned_run):
    """A trained run's log has every step once, BIO then QA, and the loss falls over the QA phase."""
    out, res = learned_run
    lg = rc.training_log(out)
    assert lg.step == list(range(1, res["steps"] + 1))
    _, phase = rc.run_points(out)
    assert lg.phase == [phase[s] for s in lg.step] and lg.phase == sorted(lg.phase)
    qa = lg.windows(max(1, res["steps"] // 4)).query("format == 'qa'")["mean"].tolist()
    assert len(qa) >= 2 and qa[-1] < qa[0]
