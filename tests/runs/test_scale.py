"""The people-scaling study: its pre-registered rule on synthetic records, its step arithmetic against the training
loop, and its runner end to end on a tiny model (train both recipes at once, the floor and the points along
training in each record, resume, the mechanism analyses of the best pair)."""

import json

import pytest

from recall_circuits.errors import RecallCircuitsError
from recall_circuits.runs import regime, scale
from recall_circuits.runs.scale import GRID, SELECT_AT, rule_state, run_name

import analyses.scale_search as search


def _row(premise, gap=0.0):
    return {"premise_ok": premise, "gap": {"value": gap, "low": gap - 0.01, "high": gap + 0.01},
            "setting": {"id": "x", "grid_point": "G1", "people": SELECT_AT}}


def test_the_setting_is_the_first_grid_point_whose_premise_holds_at_1000_people():
    names = [run_name(SELECT_AT, g) for g in GRID]
    assert rule_state({}) == ("next", GRID[0])
    assert rule_state({names[0]: _row(False)}) == ("next", GRID[1])
    assert rule_state({names[0]: _row(False), names[1]: _row(True)}) == ("chosen", GRID[1])
    assert rule_state({names[0]: _row(True)}) == ("chosen", GRID[0])
    assert rule_state({n: _row(False) for n in names}) == ("none", None)
    # no OOD number enters the choice: the same rows with other gaps choose the same point
    assert rule_state({names[0]: _row(False, 0.9), names[1]: _row(True, -0.5)}) == ("chosen", GRID[1])
    # a pair at another number of people does not choose
    assert rule_state({run_name(300, GRID[0]): _row(True)}) == ("next", GRID[0])
    # the plan's grid is ordered by cost, and fixes the fair setting once
    assert [g.epochs for g in GRID] == sorted(g.epochs for g in GRID)
    assert scale.PEOPLE == (300, 1_000, 3_000, 10_000) and SELECT_AT in scale.PEOPLE
    opts = scale.train_options(GRID[0])
    assert opts["batch_size"] == 64 and opts["schedule"] == "constant" and opts["freeze_embeddings"]
    assert opts["mix_qa_repeat"] == 1 and not scale.DATA["fullname"]


def test_reaching_the_papers_direction_needs_the_premise_the_gap_and_the_floor():
    def row(premise, gap, floor_low):
        return {"premise_ok": premise, "gap": {"value": gap}, "mixed_above_floor": {"low": floor_low}}
    assert scale.reaches(row(True, 0.3, 0.1))
    assert not scale.reaches(row(False, 0.3, 0.1)) and not scale.reaches(row(True, 0.2, 0.1))
    assert not scale.reaches(row(True, 0.3, 0.0))          # mixed not above what answering blind gives


def test_steps_per_arm_is_what_the_loop_runs(tiny_dirs, tmp_path):
    from recall_circuits.artefacts import read_json
    from recall_circuits.data.bios import DataConfig, generate, write_dataset
    from recall_circuits.training.loop import TRAIN_META, TrainConfig, train

    for people in (13, 20):
        data = tmp_path / f"d{people}"
        write_dataset(generate(DataConfig(n_people=people, **scale.DATA)), data)
        point = scale.GridPoint("T", 1, 1e-3)
        for strategy in ("mixed", "two-stage"):
            out = tmp_path / f"{strategy}{people}"
            train(TrainConfig(model=str(tiny_dirs["tiny-llama"]), strategy=strategy, data=str(data), out=str(out),
                              **(scale.train_options(point) | {"batch_size": 8, "bf16": False})), verbose=False)
            assert read_json(out / TRAIN_META)["steps"] == scale.steps_per_arm(people, point, batch_size=8)


def test_the_runner_refuses_before_writing(tmp_path, capsys):
    with pytest.raises(RecallCircuitsError, match="chooses its setting at 1,000"):
        scale.StudyConfig(out="o", record="r", select_at=12)
    rows = {run_name(SELECT_AT, g): _row(False) for g in GRID}
    rec = tmp_path / "record"
    rec.mkdir()
    for name, r in rows.items():
        (rec / f"{name}.json").write_text(json.dumps(r))
    cfg = scale.StudyConfig(out=str(tmp_path / "out"), record=str(rec))
    with pytest.raises(RecallCircuitsError, match="no grid point meets the premise at 1,000 people"):
        scale.run_study(cfg, [300, 1000])
    with pytest.raises(RecallCircuitsError, match="chosen at 1,000 people first"):
        scale.run_study(scale.StudyConfig(out=str(tmp_path / "out"), record=str(tmp_path / "empty")), [300])
    assert not (tmp_path / "out").exists()
    with pytest.raises(RecallCircuitsError, match="nothing to analyse"):
        scale.run_analyses(cfg)
    with pytest.raises(SystemExit, match="--people is required"):
        search.main(["--quick", "--out", str(tmp_path / "q")])
    assert not (tmp_path / "q").exists()


@pytest.mark.slow
def test_the_study_runs_end_to_end_on_a_tiny_model(tmp_path, monkeypatch, capsys):
    """Tiny models learn little in a few passes, so the premise is lowered to 0 here: the runner's path from the
    grid's choice to the other numbers of people and the analyses is what is checked, not a result."""
    monkeypatch.setattr(regime, "MIN_QA_ID", 0.0)
    monkeypatch.setattr(regime, "MIN_BIO", 0.0)
    monkeypatch.setattr(scale, "GRID", (scale.GridPoint("G1", 2, 1e-3), scale.GridPoint("G2", 2, 2e-3)))
    monkeypatch.setattr(scale, "FIXED", scale.FIXED | {"batch_size": 8})
    out = tmp_path / "out"
    argv = ["--quick", "--out", str(out), "--people", "16,12", "--dtype", "float32"]
    assert search.main(argv) == 0
    rec = out / "record"
    assert sorted(f.name for f in rec.glob("*.json")) == ["p12-G1.json", "p16-G1.json"]   # chosen at 12: G1
    row = json.loads((rec / "p16-G1.json").read_text())
    assert row["setting"]["people"] == 16 and row["setting"]["model"] == "tiny-llama" and row["device"] == "cpu"
    assert row["premise_ok"] and row["dtype"] == "float32"
    for key in ("gap", "mixed_qa_ood", "mixed_qa_floor", "stage_qa_floor", "mixed_above_floor"):
        assert row[key]["low"] <= row[key]["value"] <= row[key]["high"], key
    # the record's numbers are the arms' own results
    res = {a: json.loads((out / "p16-G1" / a / "results.json").read_text()) for a in ("mixed", "two-stage")}
    assert row["mixed_qa_floor"]["value"] == pytest.approx(res["mixed"]["qa_floor_acc"])
    assert row["steps"] == 2 * scale.steps_per_arm(16, scale.GRID[0], batch_size=8)
    # about ten points along each arm's training, the last one the final model's evaluation
    for arm in ("mixed", "two-stage"):
        pts = row["along"][arm]
        assert 8 <= len(pts) <= 12 and pts[-1]["step"] == row["steps"] // 2
        assert set(pts[0]) >= {"step", "phase", "qa_id", "qa_ood", "qa_floor"}
        assert pts[-1]["qa_ood"]["value"] == pytest.approx(res[arm]["qa_ood_acc"])
        assert not (out / "p16-G1" / arm / "snapshots").exists()          # measured, then removed
    assert set(row["times_s"]) == {"fine-tuning and evaluation", "learning curves"}
    # the same command again: every pair is done, nothing is trained
    monkeypatch.setattr(scale, "_pair", lambda *a, **k: pytest.fail("a finished pair ran again"))
    assert search.main(argv) == 0
    assert search.main([*argv, "--table"]) == 0 and "| p16-G1 | 16 |" in capsys.readouterr().out
    # the mechanism analyses of the best pair, with the report, in the pair's folder
    assert search.main([*argv, "--analyses", "--pair", "p12-G1"]) == 0
    summary = json.loads((out / "p12-G1" / "summary.json").read_text())
    assert [d["name"] for d in summary["directions"]][0] == "qa_ood_gap" and (out / "p12-G1" / "report.html").is_file()
    record = json.loads((rec / "p12-G1.json").read_text())
    assert summary["runs"]["mixed"]["qa_ood_acc"] == record["mixed_qa_ood"]["value"]
