import json
import re
import shutil
import subprocess
import tempfile

import pytest

import recall_circuits as rc

from analyses.reproduce import main


def _check_views_render(report, n_views):
    """In headless Chromium (Debian's package) every circuitsvis view of the report renders its React tree from
    the one shared bundle."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium to render the report")
    page = report.parent / "report_open.html"
    page.write_text(report.read_text().replace("<details>", "<details open>"))
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                              "--disable-background-networking", "--disable-component-update", "--disable-sync",
                              f"--user-data-dir={profile}", "--virtual-time-budget=15000", "--dump-dom",
                              page.as_uri()], capture_output=True, text=True, timeout=300).stdout
    views = re.findall(r'<div id="circuits-vis-[^"]+"[^>]*>(<div)?', dom)
    assert len(views) == n_views and all(views), views      # each view's div holds what React drew


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """A quick reproduction (on a CPU: fine-tuning and each recipe's analyses side by side, in child processes)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("quick") / "r"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["--quick", "--out", str(out), "--no-progress"]) == 0
    # --no-progress: no progress bar in this process, nor in the children's logs
    logs = "".join(f.read_text() for f in out.glob("*.log"))
    assert "it/s]" not in err.getvalue() and "it/s]" not in logs, (err.getvalue() + logs)[-2000:]
    return out


def _close(a, b, path=""):
    """``a`` and ``b`` equal but for wall times, floats to 1e-6 relative (the children may run another number of
    threads)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            if not k.endswith("_s"):            # wall times (trace_s, ablation_s) differ from run to run
                _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-9, nan_ok=True), path
    else:
        assert a == b, path


@pytest.mark.slow
def test_recipe_analyses_in_child_processes_match_this_process(quick_run, tmp_path):
    """The stages the reproduction computed in a child process per recipe are those this process computes."""
    import torch

    from recall_circuits.runs.pipeline import IDENTITY_FILE, RECIPE_STAGES, _Ctx, recipe_analyses

    assert (quick_run / "analyses-mixed.log").is_file() and (quick_run / "analyses-two-stage.log").is_file()
    here = tmp_path / "r"
    shutil.copytree(quick_run, here, ignore=lambda d, names: [n for n in names if n.endswith("-two-stage")])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        recipe_analyses(_Ctx(here / "data", True, False, False), here,
                        json.loads((here / "run.json").read_text())["model"], "two-stage")
    finally:
        torch.set_num_threads(threads)
    for stage in RECIPE_STAGES:
        child = quick_run / f"{stage}-two-stage"
        recorded = (child / "summary.json").read_text().replace(str(quick_run), str(here))   # its folder's paths
        _close(json.loads(recorded), json.loads((here / f"{stage}-two-stage" / "summary.json").read_text()), stage)
        assert json.loads((child / IDENTITY_FILE).read_text()) == \
            json.loads((here / f"{stage}-two-stage" / IDENTITY_FILE).read_text())


def test_consistency_per_recipe_merges_into_the_joint_measurement(quick_run, tmp_path):
    """Each recipe's consistency stage (in its own child) merged is what one joint measurement of both models and
    both runs gives; stages that measured different people do not merge."""
    import dataclasses

    from recall_circuits.errors import RecallCircuitsError
    from recall_circuits.runs.pipeline import merge_consistency
    from recall_circuits.runs.stages.consistency import ConsistencyConfig, ConsistencySummary, run

    per = {s: ConsistencySummary.load(quick_run / f"consistency-{s}") for s in ("mixed", "two-stage")}
    merged = merge_consistency(per)
    assert set(merged.models) == set(merged.along) == {"mixed", "two-stage"}
    joint = run(ConsistencyConfig({s: str(quick_run / s / "model") for s in per}, str(quick_run / "data"),
                                  str(tmp_path / "joint"), n_people=2, along={s: str(quick_run / s) for s in per},
                                  verbose=False))
    _close(json.loads(json.dumps(joint.to_dict())), merged.to_dict())
    other = dataclasses.replace(per["mixed"], people=per["mixed"].people[::-1])
    with pytest.raises(RecallCircuitsError, match="different people"):
        merge_consistency({"mixed": other, "two-stage": per["two-stage"]})


def test_quick_reproduction(quick_run):
    out = quick_run
    summary = json.loads((out / "summary.json").read_text())
    names = [d["name"] for d in summary["directions"]]
    assert names == ["qa_ood_gap", "shared_fraction", "head_concentration", "restore_ablation", "consistency"]
    gap = summary["directions"][0]
    assert isinstance(gap["rule_outcome"], bool) and set(gap["measured"]) >= {"gap", "mixed_qa_ood", "two_stage_qa_ood"}
    assert abs(gap["measured"]["gap"] - (summary["runs"]["mixed"]["qa_ood_acc"]
                                         - summary["runs"]["two-stage"]["qa_ood_acc"])) < 1e-12
    for d in summary["directions"]:
        assert d["paper"] and "reproduced" in d and d["measured"]
        assert isinstance(d["rule_outcome"], bool) and "rule" in d["measured"]  # the rule ran on this run's numbers
        # the tiny models learn nothing in a few steps: no direction can be decided on them
        assert d["premise_holds"] is False and d["reproduced"] is None and d["verdict"] == "undecided"
    # every headline accuracy and the gap carry their bootstrap interval over people, from the runs' own tables
    from recall_circuits.training.intervals import accuracy_interval, gap_interval

    res = {s: json.loads((out / s / "results.json").read_text()) for s in ("mixed", "two-stage")}
    iv = accuracy_interval(res["mixed"]["qa_ood_per_person"])
    assert summary["runs"]["mixed"]["ci95"]["qa_ood_acc"] == [iv.low, iv.high]
    assert set(summary["runs"]["two-stage"]["after_bio"]["ci95"]) == {"qa_id_acc", "qa_ood_acc", "qa_floor_acc",
                                                                     "bio_recall_id", "bio_recall_ood"}
    # QA-OOD's chance floor, and QA-OOD above it paired over people, for each recipe
    fl = gap_interval(res["mixed"]["qa_ood_per_person"], res["mixed"]["qa_floor_per_person"])
    assert summary["runs"]["mixed"]["qa_ood_above_floor"] == fl.to_dict() == gap["measured"]["mixed_above_floor"]
    assert "chance floor" in (out / "report.html").read_text()
    iv = gap_interval(res["mixed"]["qa_ood_per_person"], res["two-stage"]["qa_ood_per_person"])
    assert gap["measured"]["gap_ci95"] == [iv.low, iv.high]
    sf = summary["directions"][1]["measured"]
    assert sf["mixed"] == summary["traces"]["mixed"]["shared_fraction"]
    assert sf["pretrained"] == summary["traces"]["mixed"]["shared_fraction_pretrained"] > sf["chance"]
    assert set(summary["traces"]["mixed"]["ablation"]) >= {"none", "shared", "random0", "random1"}
    doc = (out / "report.html").read_text()
    assert doc.count("<section><h2>") == 5 and "plotly" in doc.lower() and "Restore ablation" in doc
    # what each recipe trained with, from its own results: the tiny preset's passes, precision and steps
    for s in ("mixed", "two-stage"):
        t = summary["training"][s]
        assert (t["epochs"], t["bf16"], t["steps"]) == (res[s]["config"]["epochs"], False, res[s]["steps"])
        assert t["epochs"] >= 1 and t["steps"] >= 1
    assert f"{res['mixed']['config']['epochs']} BIO, then {res['mixed']['config']['epochs']} QA" in doc
    assert doc.count("<td>float32</td>") == 2 and "<th>optimiser steps</th>" in doc
    # each recipe's training loss over windows of steps, read from its own log: every step counted once
    for s in ("mixed", "two-stage"):
        windows = summary["training_loss"][s]
        assert sum(w["n"] for w in windows) == res[s]["steps"]
        lg = rc.training_log(out / s)
        assert windows == lg.windows(windows[0]["last_step"]).to_dict(orient="records")
    assert "<h3>Training loss</h3>" in doc and "Mean QA loss over the last window: two-stage" in doc
    assert "pretrained (no fine-tuning)" in doc     # the shared-set curve's baseline
    assert "class='banner'><b>Undecided.</b>" in doc
    assert doc.count("<b class='undecided'>Undecided</b>: the models did not learn") == 5
    assert doc.count("Shared Size per head") == 2 and "<h3>Grafting" in doc
    assert "Restoring whole heads" in doc and "random rankings (3), min" in doc and "circuitsvis: mixed" in doc
    assert set(summary["attention"]) == {"mixed", "two-stage", "pretrained"}
    assert {"shared_size", "grafted_size", "attribution", "random0"} <= set(summary["head_curves"]["mixed"])
    assert "Linear probe" in doc and "along training" in doc
    assert [p["step"] for p in summary["gradient_consistency_along"]["mixed"]][-1] == \
        json.loads((out / "mixed" / "recall_circuits_train.json").read_text())["steps"]
    assert "<h3>Activation patching" in doc and "Single-head restores" in doc
    # circuitsvis's bundle once, a render call per view (three models, BIO and QA each); plotly.js once
    assert doc.count("var CircuitsVis=") == 1 and doc.count("CircuitsVis.render(") == 6
    assert doc.count("plotly.js v") == 1 and len(doc.encode()) < 8_000_000
    for st in ("mixed", "two-stage"):
        pt = summary["patching"][st]
        assert len(pt["cross_format_by_layer_role"]) == 2 and -1 <= pt["attribution_vs_exact_corr"] <= 1
        assert summary["single_head"][st]["baseline"]["qa_id_acc"] == summary["head_curves"][st]["shared_size"][
            "points"][0]["qa_id_acc"]
        top = summary["single_head"][st]["top_id_logprob_drop"]
        assert len(top) == 5 and all(set(d) == {"head", "drop"} for d in top)
        assert [d["drop"] for d in top] == sorted((d["drop"] for d in top), reverse=True)
    for g in summary["grafting"].values():
        assert 0 < g["alpha"] < 1 and set(g["grafted"]) == {"qa_id_acc", "qa_ood_acc"}
    # offline: no external script, stylesheet, font or image reference
    assert not re.search(r"<script[^>]+src=", doc) and not re.search(r"<link[^>]+href=[\"']?https?:", doc)
    assert not re.search(r"@import|url\([\"']?https?:", doc.split("<script")[0])
    # the README's quick-start block runs on this run's checkpoints
    from helpers import ROOT

    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Quick start", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    lines = [ln for ln in block.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines[0] == "import recall_circuits as rc" and len(lines) - 1 <= 10, lines     # ≤ 10 lines after it
    env: dict = {}
    exec(compile(block.replace("runs/quick", str(out)), "README.md", "exec"), env)
    assert list(env["shared"].columns) == ["layer", "head", "label", "shared", "rank"] and len(env["shared"]) == 8
    assert env["before"] <= 0 and env["after"] <= 0 and env["after"] != env["before"]
    df = env["patching"].to_dataframe()
    assert list(df.columns) == ["layer", "pos", "head", "label", "value", "restored"] and df["value"].notna().all()
    # a rerun resumes: every stage is skipped and the summary is the same
    mtime = (out / "mixed" / "results.json").stat().st_mtime
    assert main(["--quick", "--out", str(out), "--no-progress"]) == 0
    assert (out / "mixed" / "results.json").stat().st_mtime == mtime
    again = json.loads((out / "summary.json").read_text())
    assert again["directions"] == summary["directions"]
    _check_views_render(out / "report.html", 6)      # last: it skips where no Chromium is installed


def _synthetic(mixed_ood, learned=True):
    from recall_circuits.runs.stages.consistency import ConsistencySummary
    from recall_circuits.runs.stages.trace import TraceSummary

    acc = 1.0 if learned else 0.2
    run = {"qa_id_acc": acc, "qa_ood_acc": mixed_ood, "bio_recall_id": acc, "bio_recall_ood": acc,
           "qa_id_per_attribute": {}, "qa_ood_per_attribute": {}}
    stage = dict(run, qa_ood_acc=0.02, after_bio=dict(run))
    abl = lambda drop: {"none": {"qa_ood_acc": mixed_ood, "qa_id_acc": 1.0},  # noqa: E731
                        "shared": {"qa_ood_acc": mixed_ood * (1 - drop), "qa_id_acc": 1.0},
                        "random0": {"qa_ood_acc": mixed_ood, "qa_id_acc": 1.0}}
    # the fields the verdicts read; the others are placeholders (no curve: the report draws none)
    tr = lambda f, share, drop: TraceSummary(  # noqa: E731
        k=10, P=100, shared_size=round(10 * f), shared_fraction=f, chance_fraction=0.1, curve={},
        top10pct_head_share=share, head_gini=0.5, top10pct_neuron_share=None, attn_shared=0.0, mlp_shared=0.0,
        per_layer_module={}, gqa_attribution="", n_examples={}, people=[], trace_s=0.0, trace_processes=1,
        top_heads=[], ablation=abl(drop))
    cons = lambda x: {"gradient_cosine": x, "mean_representation_cosine": x,  # noqa: E731
                      "subject_relation_share": x, "retrieval_acc": [x]}
    return ({"two-stage": stage, "mixed": run}, {"mixed": tr(0.6, 0.7, 0.6), "two-stage": tr(0.5, 0.6, 0.1)},
            ConsistencySummary(people=[], models={"mixed": cons(0.5), "two-stage": cons(0.3)}))


def test_verdicts_need_their_premises():
    from recall_circuits.runs.verdicts import summarise

    runs, traces, cons = _synthetic(0.5)
    verdicts = {d["name"]: d["verdict"] for d in summarise(runs, [], traces, cons)["directions"]}
    assert set(verdicts.values()) == {"reproduced"}
    runs, traces, cons = _synthetic(0.05)            # learned, but no gap: the mechanisms have nothing to explain
    verdicts = {d["name"]: d["verdict"] for d in summarise(runs, [], traces, cons)["directions"]}
    assert verdicts.pop("qa_ood_gap") == "not reproduced" and set(verdicts.values()) == {"undecided"}
    runs, traces, cons = _synthetic(0.5, learned=False)
    ds = summarise(runs, [], traces, cons)["directions"]
    assert {d["verdict"] for d in ds} == {"undecided"} and all(d["reproduced"] is None for d in ds)


def test_report_states_each_verdict_and_why(tmp_path):
    """The report's sections say, in words, what the rules and premises decided: all reproduced (no banner); a gap
    missing (the mechanism directions undecided for want of a gap); nothing learned (the banner, all undecided)."""
    from recall_circuits.runs.report import write_report
    from recall_circuits.runs.verdicts import summarise

    def render(mixed_ood, learned=True):
        runs, traces, cons = _synthetic(mixed_ood, learned)
        write_report(tmp_path / "r.html", summarise(runs, [], traces, cons))
        return (tmp_path / "r.html").read_text()

    doc = render(0.5)
    assert doc.count("<b class='yes'>Reproduced</b>. <b>Here:</b>") == 5 and "class='banner'" not in doc
    assert "a gap of 0.480" in doc and "Mix-tuned" in doc and doc.count("<section><h2>") == 5
    doc = render(0.05)
    assert doc.count("<b class='no'>Not reproduced</b>. <b>Here:</b>") == 1
    assert "<b>No QA-OOD gap to explain.</b>" in doc and "did not learn" not in doc
    assert doc.count("<b class='undecided'>Undecided</b>: there is no QA-OOD gap for it to explain") == 4
    doc = render(0.5, learned=False)
    assert doc.count("<b class='undecided'>Undecided</b>: the models did not learn") == 5
    assert "class='banner'><b>Undecided.</b> The models did not learn" in doc and "No QA-OOD gap" not in doc
    assert "Reproduced</b>." not in doc


def test_the_report_shows_a_recipe_that_ends_in_a_loss_spike(tmp_path):
    """Known answer: a mixed run whose QA loss comes back up in its last window (planted) is named with that loss in
    the report's training-loss paragraph, beside a two-stage run that ends low; no log, no section."""
    from recall_circuits.runs.report import write_report
    from recall_circuits.runs.verdicts import summarise

    def rows(last_qa):
        return [{"first_step": 1 + 10 * i, "last_step": 10 * (i + 1), "format": f, "n": 5,
                 "mean": (last_qa if i == 2 and f == "qa" else 1.0 / (i + 1)), "max": 3.0}
                for i in range(3) for f in ("bio", "qa")]

    runs, traces, cons = _synthetic(0.05)
    summary = summarise(runs, [], traces, cons)
    write_report(tmp_path / "none.html", summary)
    assert "Training loss" not in (tmp_path / "none.html").read_text()
    write_report(tmp_path / "r.html", summary | {"training_loss": {"two-stage": rows(0.001), "mixed": rows(2.5)}})
    doc = (tmp_path / "r.html").read_text()
    assert "Mean QA loss over the last window: two-stage 0.001; mixed 2.5." in doc
    assert "mean over windows of 10 steps" in doc


def test_the_report_says_where_the_regime_search_stands(tmp_path):
    """Given the search's record, the headline says how many pairs are done and whether one reaches the target, and
    the search's table and gap figure follow it; a record where no pair qualifies says so; no record, no section."""
    from recall_circuits.runs.regime import Setting, pair_row, search_state
    from recall_circuits.runs.report import write_report
    from recall_circuits.runs.verdicts import summarise

    def res(qa_ood, steps):
        table = {str(i): [round(qa_ood * 6), 6] for i in range(10)}
        return {"qa_id_acc": 1.0, "qa_ood_acc": qa_ood, "bio_recall_id": 1.0, "bio_recall_ood": 1.0,
                "qa_id_per_person": {str(i): [6, 6] for i in range(10)}, "qa_ood_per_person": table,
                "steps": steps, "wall_s": 60.0, "after_bio": {"bio_recall_id": 1.0, "bio_recall_ood": 1.0}}
    rows = {"A1": pair_row(Setting("A1", why="first try"), res(1 / 6, 100), res(0.0, 100)),
            "A2": pair_row(Setting("A2", qa_share=2, why="second try"), res(3 / 6, 100), res(0.0, 100))}
    runs, traces, cons = _synthetic(0.5)

    def render(search):
        summary = summarise(runs, [], traces, cons) | ({"search": search} if search else {})
        write_report(tmp_path / "r.html", summary)
        return (tmp_path / "r.html").read_text()

    doc = render(search_state(rows))
    assert ("<b>Regime search: 2 of 12 pre-registered pairs done; pair A2 reaches the target: mixed − two-stage on "
            "QA-OOD 0.500 [0.500, 0.500]; this preset is pair A10&#x27;s setting") in doc   # regime.PRESET_PAIR
    assert "<h2>The regime search</h2>" in doc and "<td>second try</td>" in doc and "target 0.25" in doc
    assert doc.index("Headline accuracies") < doc.index("Regime search: 2 of 12") < doc.index("<section><h2>")
    doc = render(search_state({"A1": rows["A1"]}))
    assert ("Regime search: 1 of 12 pre-registered pairs done; no pair reaches the target of 0.25; the largest gap "
            "with the premise holding is A1&#x27;s, 0.167 [0.167, 0.167]") in doc
    doc = render(None)
    assert "Regime search" not in doc and "The regime search" not in doc


def test_a_missing_search_record_fails_before_any_work(tmp_path):
    from recall_circuits.errors import RecallCircuitsError
    from recall_circuits.runs.pipeline import reproduce

    with pytest.raises(RecallCircuitsError, match="is not a folder"):
        reproduce(tmp_path / "r", quick=True, search_record=tmp_path / "nowhere", verbose=False)
    assert not (tmp_path / "r").exists()
