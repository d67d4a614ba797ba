"""The verdicts of the reproduction: the paper's five directions, each decided by a stated rule from the numbers a
run measured, and "undecided" when the models did not learn what a direction presupposes.

``summarise(runs, sens, traces, consistency)`` gives ``summary.json``'s ``directions`` (name, verdict, measured
numbers with the rule that decided, the paper's claim) and the headline numbers of each run.
"""

from __future__ import annotations

from typing import Any

from recall_circuits.runs.regime import TARGET_GAP
from recall_circuits.runs.stages.consistency import ConsistencySummary
from recall_circuits.runs.stages.trace import TraceSummary
from recall_circuits.runs.summary import Direction, ReproductionSummary, TraceRow
from recall_circuits.training.evaluation import Evaluation, flat_keys, floor_interval
from recall_circuits.training.intervals import accuracy_interval, gap_interval

PAPER = {
    "qa_ood_gap": "Mix-tuned ≫ Stage-tuned on QA-OOD (summary: up to 38 points; 9.7% vs 88.6% quoted)",
    "shared_fraction": "|S_k|/k larger under Mix (up to 1.2× at k=1e8), > 0.6 for k < 1e5, above chance",
    "head_concentration": "> 60% of shared parameters in the top 10% of heads; more concentrated under Mix",
    "restore_ablation": "restoring S costs Mix 66.0% of QA-OOD accuracy vs Stage 6.7%; far more than random",
    "consistency": "gradient and representation consistency higher under Mix; BIO signature on subject+relation",
}


def headline(r: dict[str, Any]) -> dict[str, Any]:
    """A fine-tuning run's headline numbers, with ``ci95``: the 95% bootstrap interval over people [low, high] of
    each accuracy whose per-person table the run kept (keyed like the accuracy: ``qa_ood_acc``, ``bio_recall_id``)."""
    keys = ("qa_id_acc", "qa_ood_acc", "qa_floor_acc", "qa_id_first_token_acc", "qa_ood_first_token_acc",
            "bio_recall_id", "bio_recall_ood", "train_wall_s")
    out: dict[str, Any] = {k: r.get(k) for k in keys}
    out["qa_ood_above_floor"] = floor_interval(r)
    out["ci95"] = {}
    for measure in Evaluation.MEASURES:
        acc_key, _, base = flat_keys(measure)
        if r.get(f"{base}_per_person"):
            iv = accuracy_interval(r[f"{base}_per_person"])
            out["ci95"][acc_key] = [iv.low, iv.high]
    return out


def gap_ci95(mixed: dict[str, Any], stage: dict[str, Any]) -> list[float] | None:
    """The paired 95% bootstrap interval over people of mixed − two-stage on QA-OOD (None without the tables)."""
    a, b = mixed.get("qa_ood_per_person"), stage.get("qa_ood_per_person")
    if not a or not b:
        return None
    iv = gap_interval(a, b)
    return [iv.low, iv.high]


def _rel_drop(abl: dict[str, dict[str, Any]], cond: str, key: str = "qa_ood_acc") -> float:
    """Share of the unablated accuracy lost when ``cond`` is restored (0 when the unablated accuracy is 0)."""
    before = abl["none"][key]
    return 0.0 if before == 0 else (before - abl[cond][key]) / before


PREMISE_LEARNED = ("both recipes answer the trained questions (QA-ID >= 0.9) and memorise the biographies (BIO "
                   "recall >= 0.9 on ID and OOD people; two-stage after its BIO phase)")
PREMISE_GAP = "the QA-OOD gap is there to explain (the qa_ood_gap direction holds)"


def _apply_premises(directions: list[Direction], *, learned: bool) -> None:
    """A verdict only where its premise holds. The QA-OOD gap presupposes models that learned what they were
    trained on; the mechanism directions (shared parameters, head concentration, restore ablation, consistency)
    explain the gap and presuppose it. Where a premise fails, ``reproduced`` is None and ``verdict`` says
    "undecided" with the premise that failed; the rule's own outcome stays in ``rule_outcome``."""
    gap_holds = False
    for d in directions:
        premise = PREMISE_LEARNED if d["name"] == "qa_ood_gap" else f"{PREMISE_LEARNED}; {PREMISE_GAP}"
        ok = learned if d["name"] == "qa_ood_gap" else (learned and gap_holds)
        d["premise"] = premise
        d["premise_holds"] = ok
        d["rule_outcome"] = d["reproduced"]
        if d["reproduced"] is None:
            d["verdict"] = "not run"
        elif not ok:
            d["reproduced"], d["verdict"] = None, "undecided"
        else:
            d["verdict"] = "reproduced" if d["reproduced"] else "not reproduced"
        if d["name"] == "qa_ood_gap":
            gap_holds = bool(d["reproduced"])


def _gap_direction(ts: dict[str, Any], mx: dict[str, Any], memorised: float) -> Direction:
    gap = mx["qa_ood_acc"] - ts["qa_ood_acc"]
    return {
        "name": "qa_ood_gap",
        "reproduced": bool(gap >= TARGET_GAP and memorised >= 0.9 and min(ts["qa_id_acc"], mx["qa_id_acc"]) >= 0.9),
        "measured": {"mixed_qa_ood": mx["qa_ood_acc"], "two_stage_qa_ood": ts["qa_ood_acc"], "gap": gap,
                     "gap_ci95": gap_ci95(mx, ts),
                     "mixed_qa_floor": mx.get("qa_floor_acc"), "two_stage_qa_floor": ts.get("qa_floor_acc"),
                     "mixed_above_floor": floor_interval(mx), "two_stage_above_floor": floor_interval(ts),
                     "min_bio_recall": memorised, "mixed_qa_id": mx["qa_id_acc"], "two_stage_qa_id": ts["qa_id_acc"],
                     "rule": f"gap >= {TARGET_GAP}, both QA-ID >= 0.9, BIO recall >= 0.9 (two-stage: after its BIO "
                             "phase)"},
        "paper": PAPER["qa_ood_gap"],
    }


def _trace_directions(tm: TraceSummary, tt: TraceSummary) -> list[Direction]:
    """Shared fraction, head concentration and restore ablation, mixed (``tm``) against two-stage (``tt``)."""
    am, at = tm.ablation or {}, tt.ablation or {}
    rnd = [c for c in am if c.startswith("random")]
    m_drop, t_drop = _rel_drop(am, "shared"), _rel_drop(at, "shared")
    m_rand = max(_rel_drop(am, c) for c in rnd)
    return [{
        "name": "shared_fraction",
        "reproduced": bool(tm.shared_fraction > tt.shared_fraction
                           and min(tm.shared_fraction, tt.shared_fraction) > tm.chance_fraction),
        "measured": {"k": tm.k, "mixed": tm.shared_fraction, "two_stage": tt.shared_fraction,
                     "chance": tm.chance_fraction, "pretrained": tm.shared_fraction_pretrained,
                     "ratio_mixed_over_stage": tm.shared_fraction / max(tt.shared_fraction, 1e-12),
                     "rule": "|S_k|/k(mixed) > |S_k|/k(two-stage) > chance k/P at the run's k"},
        "paper": PAPER["shared_fraction"]}, {
        "name": "head_concentration",
        "reproduced": bool(tm.top10pct_head_share > tt.top10pct_head_share),
        "measured": {"mixed_top10pct_head_share": tm.top10pct_head_share,
                     "two_stage_top10pct_head_share": tt.top10pct_head_share,
                     "mixed_head_gini": tm.head_gini, "two_stage_head_gini": tt.head_gini,
                     "rule": "share of attention-shared entries in the top 10% of heads larger under mixed"},
        "paper": PAPER["head_concentration"]}, {
        "name": "restore_ablation",
        "reproduced": bool(m_drop > t_drop and m_drop > m_rand),
        "measured": {"mixed_rel_qa_ood_drop_shared": m_drop, "two_stage_rel_qa_ood_drop_shared": t_drop,
                     "mixed_rel_qa_ood_drop_random_max": m_rand,
                     "mixed_qa_ood": {c: v["qa_ood_acc"] for c, v in am.items()},
                     "two_stage_qa_ood": {c: v["qa_ood_acc"] for c, v in at.items()},
                     "rule": "relative QA-OOD loss when S is restored: mixed > two-stage, and mixed's loss under S "
                             "> under every random same-size control (0 where the unablated accuracy is 0)"},
        "paper": PAPER["restore_ablation"]}]


def _consistency_direction(consistency: ConsistencySummary) -> Direction:
    cm, ct = consistency.models["mixed"], consistency.models["two-stage"]
    keys = ("gradient_cosine", "mean_representation_cosine", "subject_relation_share")
    return {
        "name": "consistency",
        "reproduced": bool(all(cm[k] > ct[k] for k in keys)),
        "measured": {**{f"mixed_{k}": cm[k] for k in keys}, **{f"two_stage_{k}": ct[k] for k in keys},
                     "mixed_retrieval_acc_last_layer": cm["retrieval_acc"][-1],
                     "two_stage_retrieval_acc_last_layer": ct["retrieval_acc"][-1],
                     "rule": "mixed > two-stage on gradient cosine, mean representation cosine over layers and "
                             "the BIO input-signature share on subject + relation tokens (OOD people)"},
        "paper": PAPER["consistency"]}


def _not_run(name: str) -> Direction:
    return {"name": name, "reproduced": None, "measured": "not run", "paper": PAPER[name]}


def _trace_row(t: TraceSummary) -> TraceRow:
    return TraceRow(k=t.k, P=t.P, shared_fraction=t.shared_fraction, chance_fraction=t.chance_fraction, curve=t.curve,
                    shared_fraction_pretrained=t.shared_fraction_pretrained, curve_pretrained=t.curve_pretrained,
                    top10pct_head_share=t.top10pct_head_share, head_gini=t.head_gini, ablation=t.ablation,
                    top_heads=t.top_heads)


TRACE_KEYS = ("k", "P", "shared_fraction", "chance_fraction", "curve", "shared_fraction_pretrained", "curve_pretrained",
              "top10pct_head_share", "head_gini", "ablation", "top_heads")   # a trace's fields in summary.json


def summarise(runs: dict[str, dict[str, Any]], sens: list[dict[str, Any]],
              traces: dict[str, TraceSummary] | None = None,
              consistency: ConsistencySummary | None = None) -> ReproductionSummary:
    ts, mx = runs["two-stage"], runs["mixed"]
    ts_bio = ts.get("after_bio", ts)
    memorised = min(ts_bio.get("bio_recall_id", 0), ts_bio.get("bio_recall_ood", 0),
                    mx.get("bio_recall_id", 0), mx.get("bio_recall_ood", 0))
    directions = [_gap_direction(ts, mx, memorised)]
    directions += (_trace_directions(traces["mixed"], traces["two-stage"]) if traces else
                   [_not_run(k) for k in ("shared_fraction", "head_concentration", "restore_ablation")])
    directions.append(_consistency_direction(consistency) if consistency else _not_run("consistency"))
    _apply_premises(directions, learned=bool(memorised >= 0.9 and min(ts["qa_id_acc"], mx["qa_id_acc"]) >= 0.9))
    return {"directions": directions, "runs": {k: headline(v) | {"after_bio": headline(v["after_bio"])}
                                               if "after_bio" in v else headline(v) for k, v in runs.items()},
            "per_attribute": {k: {"qa_ood": v["qa_ood_per_attribute"], "qa_id": v["qa_id_per_attribute"]}
                              for k, v in runs.items()},
            "sensitivity": sens,
            "traces": {k: _trace_row(v) for k, v in (traces or {}).items()}}
