"""The search plan's fairness and decision rules on synthetic results (no training)."""

import dataclasses
import json

import pytest

from recall_circuits.errors import RecallCircuitsError
from helpers import ROOT

from recall_circuits.runs.regime import (
    PLAN,
    Setting,
    arm_options,
    best_pair,
    choose,
    load_record,
    pair_row,
    premise_ok,
    resolve,
    search_state,
    table_markdown,
)


def _res(qa_id, qa_ood, bio, steps=100, people=10, after_bio=None):
    def table(acc):
        k = round(acc * 6)
        return {str(i): [k, 6] for i in range(people)}
    r = {"qa_id_acc": qa_id, "qa_ood_acc": qa_ood, "bio_recall_id": bio, "bio_recall_ood": bio,
         "qa_id_per_person": table(qa_id), "qa_ood_per_person": table(qa_ood), "steps": steps, "wall_s": 1.0}
    if after_bio is not None:
        r["after_bio"] = {"bio_recall_id": after_bio, "bio_recall_ood": after_bio}
    return r


def _opt(opts, name):
    return opts[opts.index(name) + 1]


def test_both_arms_share_every_setting_and_qa_updates_match():
    for s in PLAN:
        s = resolve(s, {})
        mixed, stage = arm_options(s, "mixed"), arm_options(s, "two-stage")
        for flag in ("--lr", "--batch-size", "--warmup-frac", "--schedule", "--seed", "--preset"):
            assert _opt(mixed, flag) == _opt(stage, flag)
        assert ("--freeze-embeddings" in mixed) == ("--freeze-embeddings" in stage) == s.frozen
        assert int(_opt(stage, "--bio-epochs")) == int(_opt(mixed, "--epochs")) == s.epochs
        assert int(_opt(stage, "--epochs")) == s.epochs * int(_opt(mixed, "--mix-qa-repeat"))
    assert len(PLAN) >= 12 and len({s.id for s in PLAN}) == len(PLAN)


def test_premise_and_target():
    good_stage = _res(1.0, 0.0, 0.5, after_bio=1.0)
    assert premise_ok(_res(1.0, 0.5, 0.95), good_stage)
    assert not premise_ok(_res(0.8, 0.5, 0.95), good_stage)          # mixed did not learn the trained questions
    assert not premise_ok(_res(1.0, 0.5, 0.95), _res(1.0, 0.0, 1.0, after_bio=0.5))  # BIO not memorised
    row = pair_row(Setting("X"), _res(1.0, 0.5, 0.95), good_stage)
    assert row["gap"]["value"] == pytest.approx(0.5) and row["qualifies"]
    row = pair_row(Setting("X"), _res(1.0, 1 / 6, 0.95), good_stage)
    assert row["premise_ok"] and not row["qualifies"]                  # a gap of 0.17 < 0.25


def test_choose_takes_the_cheapest_qualifying_pair_else_the_largest_gap():
    stage = _res(1.0, 0.0, 0.5, after_bio=1.0)
    a = pair_row(Setting("A", epochs=30), _res(1.0, 0.5, 0.95, steps=300), stage)
    b = pair_row(Setting("B", epochs=20), _res(1.0, 2 / 6, 0.95, steps=200), stage)
    c = pair_row(Setting("C", epochs=10), _res(1.0, 1 / 6, 0.95, steps=100), stage)
    assert choose({"A": a, "B": b, "C": c}) == (b, True)
    assert choose({"C": c}) == (c, False)
    bad = pair_row(Setting("D"), _res(0.1, 0.9, 0.1), stage)
    assert choose({"D": bad}) == (None, False)
    # a repeat of a pair with another seed (and precision) informs but does not compete, even with a larger gap
    again = pair_row(Setting("C", epochs=10, seed=1), _res(1.0, 0.5, 0.95, steps=100), stage, dtype="bfloat16",
                     repeat_of="C")
    assert again["qualifies"] and choose({"C": c, "C-seed1-bfloat16": again}) == (c, False)
    assert best_pair({"C": c, "C-seed1-bfloat16": again}) is c
    rows = table_markdown({"C": c, "C-seed1-bfloat16": again}).splitlines()[2:]
    assert "| 200 | float32 |" in rows[0] and "| 200 | bfloat16 |" in rows[1]


def test_from_best_takes_the_other_fields_from_the_best_pair():
    stage = _res(1.0, 0.0, 0.5, after_bio=1.0)
    best = pair_row(Setting("A3", epochs=30, people=50), _res(1.0, 0.5, 0.95), stage)
    worse = pair_row(Setting("A1"), _res(1.0, 1 / 6, 0.95), stage)
    s = resolve(next(p for p in PLAN if p.id == "A11"), {"A3": best, "A1": worse})
    assert (s.id, s.epochs, s.people, s.qa_share) == ("A11", 30, 50, 4)
    # the same lower bound: the larger gap is the best, whichever order the pairs come in
    tied = {**best, "gap": {**worse["gap"], "value": worse["gap"]["value"] + 0.1}}
    for done in ({"A1": worse, "A3": tied}, {"A3": tied, "A1": worse}):
        assert best_pair(done) is tied


def test_the_best_pair_so_far_is_among_the_pairs_before_it_in_the_plan():
    """A12 may finish before A11: its outcome, however good, does not change A11's setting (the best pair before
    A11), while A11's does change A12's."""
    stage = _res(1.0, 0.0, 0.5, after_bio=1.0)
    a10 = pair_row(Setting("A10", epochs=40), _res(1.0, 1 / 6, 0.95), stage)
    a12_raw = next(p for p in PLAN if p.id == "A12")
    a12 = pair_row(resolve(a12_raw, {"A10": a10}), _res(1.0, 0.5, 0.95), stage)
    assert best_pair({"A10": a10, "A12": a12}) is a12
    a11 = resolve(next(p for p in PLAN if p.id == "A11"), {"A10": a10, "A12": a12})
    assert (a11.epochs, a11.fullname, a11.qa_share) == (40, False, 4)
    a11_row = pair_row(a11, _res(1.0, 0.9, 0.95), stage)
    assert resolve(a12_raw, {"A10": a10, "A11": a11_row, "A12": a12}).epochs == 40
    assert resolve(a12_raw, {"A10": a10, "A11": a11_row}) == dataclasses.replace(a11, id="A12", fullname=True,
                                                                                 qa_share=2, why=a12_raw.why)


def test_from_best_resolves_from_the_json_record():
    """The record on disk holds each setting as JSON (tuples become lists): A11 and A12 resolve from it."""
    from pathlib import Path

    record = load_record(ROOT / "docs" / "search")
    for i, p in enumerate(PLAN[10:], start=10):
        earlier = {q.id for q in PLAN[:i]}
        best = best_pair({k: v for k, v in record.items() if k in earlier})["setting"]
        s = resolve(p, record)
        assert s.from_best == () and s.epochs == best["epochs"] and s.people == best["people"]
        assert (s.qa_share, s.fullname) == ((4, best["fullname"]) if p.id == "A11" else (2, True))


def test_the_row_carries_the_ood_breakdown_where_the_results_have_it():
    stage = _res(1.0, 0.0, 0.5, after_bio=1.0)
    mixed = _res(1.0, 0.5, 0.95)
    mixed |= {"qa_ood_first_token_acc": 0.6, "qa_ood_per_attribute": {"major": {"acc": 0.25, "first_token_acc": 0.5,
                                                                                "n": 4}}}
    row = pair_row(Setting("X"), mixed, stage)
    assert row["qa_ood_detail"]["mixed"] == {"first_token": 0.6, "per_attribute": {"major": 0.25}}
    assert row["qa_ood_detail"]["two-stage"] == {"first_token": None, "per_attribute": {}}


def _write_record(folder, rows):
    folder.mkdir()
    for pid, row in rows.items():
        (folder / f"{pid}.json").write_text(json.dumps(row))


def test_the_record_loads_in_the_plans_order_and_says_where_the_search_stands(tmp_path):
    stage = _res(1.0, 0.0, 0.5, after_bio=1.0)
    rows = {"A10": pair_row(Setting("A10", epochs=40), _res(1.0, 1 / 6, 0.95), stage),
            "A2": pair_row(Setting("A2", qa_share=2), _res(1.0, 2 / 6, 0.95, steps=200), stage),
            "A2-seed1": pair_row(Setting("A2", qa_share=2, seed=1), _res(1.0, 2 / 6, 0.95, steps=200), stage),
            "A1": pair_row(Setting("A1"), _res(0.5, 0.5, 0.95), stage)}          # premise fails
    _write_record(tmp_path / "rec", rows)
    done = load_record(tmp_path / "rec")
    assert list(done) == ["A1", "A2", "A10", "A2-seed1"] and done["A2"] == json.loads(json.dumps(rows["A2"]))
    state = search_state(done)
    assert (state["chosen"], state["reached"], state["planned"][0], state["target_gap"]) == ("A2", True, "A1", 0.25)
    state = search_state({k: done[k] for k in ("A1", "A10")})
    assert (state["chosen"], state["reached"]) == ("A10", False)
    assert search_state({"A1": done["A1"]})["chosen"] is None
    table = table_markdown(done).splitlines()
    assert len(table) == 2 + 4 and table[3].startswith("| A2 | 20 | constant | yes | 2 | pronoun | 100 | 0 | ")
    assert "| 0.333 [0.333, 0.333] | 0.000 [0.000, 0.000] | 0.333 [0.333, 0.333] |" in table[3]
    assert table[2].endswith("| fails | no |") and table[3].endswith("| holds | yes |")


def test_a_broken_or_missing_record_is_a_one_line_error(tmp_path):
    with pytest.raises(RecallCircuitsError, match="is not a folder"):
        load_record(tmp_path / "nowhere")
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "A1.json").write_text("{")
    with pytest.raises(RecallCircuitsError, match="A1.json is not valid JSON"):
        load_record(tmp_path / "rec")


def test_the_cpu_preset_is_the_pair_the_search_chose():
    """The main job trains what the search measured: with ``PRESET_PAIR`` set, each recipe's training options under
    the ``cpu`` presets equal that pair's arm (every option that changes what is trained), and the data preset is the
    pair's; before the search has chosen, the presets are the ones that preceded it."""
    from pathlib import Path

    from recall_circuits.runs import regime
    from recall_circuits.runs.pipeline import _train_cfg
    from recall_circuits.training.loop import _NOT_IDENTITY, TrainConfig, build_phases
    from recall_circuits.training.options import config_from_options
    from recall_circuits.training.presets import DATA_PRESETS, TRAIN_PRESETS

    def trained(cfg):
        """What is trained: every option that changes it, the phases' passes, rates and examples in place of the
        options that only spell them (``bio_epochs`` None means ``epochs``, ``qa_lr`` None means ``lr``)."""
        tc = TrainConfig(**cfg)
        phases = [(p.name, p.epochs, p.lr, p.examples) for p in build_phases(tc, 3, 5)]
        spelled = ("bio_epochs", "qa_lr", "mix_bio_repeat", "mix_qa_repeat", "epochs", "lr")
        return {k: v for k, v in tc.to_dict().items() if k not in _NOT_IDENTITY + spelled} | {"phases": phases}

    if regime.PRESET_PAIR is None:
        cfg = TrainConfig(**_train_cfg(Path("o"), Path("d"), "mixed", "cpu", {}))
        assert (cfg.epochs, cfg.lr, cfg.batch_size, cfg.schedule, cfg.freeze_embeddings) == (
            10, 5e-4, 4, "linear", False)
        assert DATA_PRESETS["cpu"] == {"n_people": 100, "seed": 0}
        return
    record = load_record(ROOT / "docs" / "search")
    s = Setting.from_dict(record[regime.PRESET_PAIR]["setting"])
    assert choose(record)[0]["setting"]["id"] == regime.PRESET_PAIR
    for strategy in ("mixed", "two-stage"):
        preset_cfg = trained(_train_cfg(Path("o"), Path("d"), strategy, "cpu", {}))
        # the one deliberate difference: the preset autocasts to bfloat16 (float32 weights and optimiser), the
        # search trained in float32
        assert preset_cfg.pop("bf16") is True
        search_cfg = trained(config_from_options([*arm_options(s, strategy), "--data", "d", "--out", "o"]))
        assert search_cfg.pop("bf16") is False
        assert search_cfg == preset_cfg, strategy
    assert DATA_PRESETS["cpu"] == {"n_people": s.people, "seed": s.seed} | ({"fullname": True} if s.fullname else {})
    assert TRAIN_PRESETS["cpu"]["model"] == "smollm2-135m"


def test_a_pair_runs_its_arms_side_by_side_with_the_search_options(tmp_path):
    """``analyses/regime_search.py`` trains both arms through the library's side-by-side runner: one torch thread
    each, float32 whatever the preset, the QA updates matched; a finished pair is read back, not retrained."""
    from recall_circuits.runs.search import ensure_data as _ensure_data
    from recall_circuits.runs.search import run_arms as _run_arms

    s = Setting("T", epochs=1, people=8, qa_share=2)
    data = _ensure_data(tmp_path, s)
    res = _run_arms(s, data, tmp_path / "T", False, "tiny-llama", [])
    assert set(res) == {"mixed", "two-stage"}
    for arm, r in res.items():
        assert r["torch_threads"] == 1 and r["config"]["bf16"] is False and r["config"]["freeze_embeddings"], arm
        assert (tmp_path / "T" / f"{arm}.log").is_file()
    # mixed: 8 BIO + 2 × 24 QA examples in its epoch; two-stage: 8 BIO, then 2 epochs of 24 QA (batches of 4)
    assert (res["mixed"]["steps"], res["two-stage"]["steps"]) == (14, 2 + 12)
    row = pair_row(s, res["mixed"], res["two-stage"])
    assert row["steps"] == 28 and row["torch_threads"] == {"mixed": 1, "two-stage": 1}
    stamp = (tmp_path / "T" / "mixed" / "results.json").stat().st_mtime_ns
    assert _run_arms(s, data, tmp_path / "T", False, "tiny-llama", []) == res
    assert (tmp_path / "T" / "mixed" / "results.json").stat().st_mtime_ns == stamp


def test_a_pair_that_takes_from_the_best_runs_only_once_its_setting_is_settled(tmp_path, capsys, monkeypatch):
    """A12 takes its other fields from the best pair so far: with a record that lacks the pairs before it (an
    empty one), it would silently start from A1's defaults; the search refuses, naming the pairs, before anything
    is written. With the repository's record less A11 (pending when A12 ran), A11 cannot change A12's setting."""
    from pathlib import Path

    from recall_circuits.runs.regime import unsettled_by

    import analyses.regime_search as search

    a12 = next(p for p in PLAN if p.id == "A12")
    a11 = next(p for p in PLAN if p.id == "A11")
    record = load_record(ROOT / "docs" / "search")
    # with nothing done A12 would start from A1's defaults; A2 and A4 differ from them only in fields A12 names
    assert unsettled_by(a12, {}) == ["A3", "A5", "A6", "A7", "A8", "A9", "A10"]
    assert unsettled_by(a12, {k: v for k, v in record.items() if k != "A11"}) == []
    assert unsettled_by(a11, {}, running_first=[p.id for p in PLAN[:10]]) == []    # they run first, in order
    without_a10 = {k: v for k, v in record.items() if k != "A10"}
    assert unsettled_by(a11, without_a10) == ["A10"]     # E = 40 as the base would change A11's passes
    assert unsettled_by(PLAN[0], {}) == []               # a pair with a fixed setting never waits
    empty = tmp_path / "record"
    empty.mkdir()
    import recall_circuits.runs.search as orchestration

    for step in ("ensure_data", "run_arms"):     # were the check gone, the pair would start: fail at once
        monkeypatch.setattr(orchestration, step, lambda *a, _step=step, **k: pytest.fail(f"{_step} ran"))
    assert search.main(["--out", str(tmp_path / "out"), "--record", str(empty), "--only", "A12"]) == 2
    assert "error: A12 takes its other settings from the best pair so far, and A3, A5, A6, A7, A8, A9, A10 (not in" \
        in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not any(empty.iterdir())
    with pytest.raises(SystemExit):      # a step count below 0: argparse's one-line error, nothing written
        search.main(["--out", str(tmp_path / "out"), "--only", "A1", "--checkpoint-every", "-1"])
    assert "--checkpoint-every: expected a whole number of steps" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_list_says_how_far_a_started_pair_got(tmp_path, capsys):
    """``--list`` names, for a pair begun in OUT and not in the record, each arm's last step, its steps and the
    checkpoint it resumes from (a finished arm: "finished"; one whose final model is saved and not yet evaluated:
    "trained, evaluating", since a resume only evaluates it); a pair not begun is "todo"."""
    import analyses.regime_search as search

    empty = tmp_path / "record"
    empty.mkdir()
    mixed, stage = tmp_path / "out" / "A3" / "mixed", tmp_path / "out" / "A3" / "two-stage"
    (stage / "checkpoint").mkdir(parents=True)
    (stage / "recall_circuits_train.json").write_text(json.dumps({"total_steps": 6000}))
    (stage / "metrics.jsonl").write_text("".join(json.dumps({"step": i, "loss": 1.0}) + "\n" for i in (1, 2, 411)))
    (stage / "checkpoint" / "trainer_state.json").write_text(json.dumps({"step": 400, "global_step": 400}))
    mixed.mkdir()
    (mixed / "results.json").write_text("{}")
    assert search.main(["--out", str(tmp_path / "out"), "--record", str(empty), "--list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "started: mixed finished, two-stage 411 / 6000 (resumes from 400)" in lines["A3"]
    assert lines["A2"].split()[1] == "todo" and lines["A4"].split()[1] == "todo"
    (stage / "checkpoint" / "trainer_state.json").unlink()       # before its first checkpoint: from the start
    search.main(["--out", str(tmp_path / "out"), "--record", str(empty), "--list"])
    assert "two-stage 411 / 6000 (resumes from 0)" in capsys.readouterr().out
    (stage / "model").mkdir()                                    # trained, the evaluation not yet written
    (stage / "model" / "recall_circuits_train.json").write_text(json.dumps({"total_steps": 6000}))
    search.main(["--out", str(tmp_path / "out"), "--record", str(empty), "--list"])
    assert "started: mixed finished, two-stage trained, evaluating" in capsys.readouterr().out
