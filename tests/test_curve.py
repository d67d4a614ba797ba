"""Learning curves (recall_circuits.training.curve): every point is the evaluation of that checkpoint, the last one is
the run's own final evaluation, a run that learns its questions shows it, and an interrupted curve resumes."""

from __future__ import annotations

import json

import pytest

import recall_circuits as rc
from recall_circuits.data.bios import load_dataset
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.models.loading import load_hf
import recall_circuits.training.evaluation as ev_mod
from recall_circuits.training.evaluation import evaluate
from recall_circuits.training.run import run_finetune


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
    assert c.evaluation[i] == evaluate(model, tok, ds, bio=False).to_dict()
    # the last point is the run's own final evaluation (results.json)
    for k in ("qa_id_acc", "qa_ood_acc", "qa_id_first_token_acc", "qa_ood_per_person"):
        assert c.evaluation[-1][k] == res[k], k
    # known answer: the run learns its trained questions, and the curve shows it
    df = c.to_dataframe().query("measure == 'qa_id'")
    assert df["acc"].iloc[0] < 0.2 and res["qa_id_acc"] == df["acc"].iloc[-1] >= 0.9
    assert (df["low"] <= df["acc"]).all() and (df["acc"] <= df["high"]).all()
    assert set(c.to_dataframe()["measure"]) == {"qa_id", "qa_ood"}


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
    assert rc.LearningCurve.load(dest / "two-stage").step[-1] == res["steps"]
    # a finished run is not overwritten; bad input is one line, before anything is written
    for args, msg in [(["--runs", f"two-stage={out}"], "complete run"),
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
