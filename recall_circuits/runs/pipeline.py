"""The end-to-end reproduction: data → two-stage and mixed fine-tuning → evaluation → report.

Each stage writes its own directory under ``out`` and is skipped when complete, so a rerun after an interruption
resumes (fine-tuning resumes from its last checkpoint). ``summary.json`` lists the five directions of docs/paper.md §7
with ``reproduced`` decided from the numbers measured in this run; a direction whose stage is not part of the
pipeline yet says so (``reproduced: null``) instead of guessing.

Layout of ``out``: ``data/``, ``two-stage/``, ``mixed/`` (each with ``results.json``), optional sensitivity runs
``two-stage-qalr{lr}/`` and ``mixed-lr{lr}/``, ``summary.json``, ``report.html``.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recall_circuits.runs.artefacts import check_same, model_identity, read_json, write_json, write_text_atomic
from recall_circuits.runs.viz import share_circuitsvis
from recall_circuits.data.bios import DataConfig, data_identity, generate, write_dataset
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.runs.regime import TARGET_GAP
from recall_circuits.training.presets import DATA_PRESETS, SENSITIVITY_QA_LRS, TRAIN_PRESETS, preset

log = logging.getLogger(__name__)
SUMMARY_FILE, REPORT_FILE = "summary.json", "report.html"
PAPER = {
    "qa_ood_gap": "Mix-tuned ≫ Stage-tuned on QA-OOD (summary: up to 38 points; 9.7% vs 88.6% quoted)",
    "shared_fraction": "|S_k|/k larger under Mix (up to 1.2× at k=1e8), > 0.6 for k < 1e5, above chance",
    "head_concentration": "> 60% of shared parameters in the top 10% of heads; more concentrated under Mix",
    "restore_ablation": "restoring S costs Mix 66.0% of QA-OOD accuracy vs Stage 6.7%; far more than random",
    "consistency": "gradient and representation consistency higher under Mix; BIO signature on subject+relation",
}


IDENTITY_FILE, RUN_FILE = "identity.json", "run.json"


def _finetune(out: Path, data: Path, strategy: str, train_preset: str, extra: dict[str, Any],
              verbose: bool, overwrite: bool, hashed: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """A fine-tuning stage: reused only when it was trained from the same base weights, data and options."""
    from recall_circuits.training.run import RESULTS_FILE, run_finetune  # noqa: PLC0415
    from recall_circuits.models.registry import resolve_model  # noqa: PLC0415
    from recall_circuits.training.loop import TRAIN_META, TrainConfig, train_identity  # noqa: PLC0415

    cfg = preset(TRAIN_PRESETS, train_preset) | extra | {"strategy": strategy, "data": str(data), "out": str(out)}
    tc = TrainConfig(**cfg)
    identity = train_identity(tc, resolve_model(tc.model), hashed(tc.model))
    if (out / TRAIN_META).is_file():
        try:
            check_same(read_json(out / TRAIN_META).get("identity"), identity, out)
        except RecallCircuitsError:
            if not overwrite:
                raise
            log.info("stage %s: its inputs changed, fine-tuning again (--overwrite)", out.name)
            shutil.rmtree(out)
    if (out / RESULTS_FILE).is_file():
        log.info("stage %s: complete, skipped", out.name)
        return read_json(out / RESULTS_FILE)
    log.info("stage %s: fine-tuning (%s)", out.name, strategy)
    res = run_finetune(cfg, resume=out.exists(), overwrite=False, verbose=verbose)
    assert res is not None
    return res


def _stage(out: Path, what: str, run: Callable[[], dict[str, Any]], identity: dict[str, Any],
           overwrite: bool) -> dict[str, Any]:
    """A cached analysis stage: complete when its ``summary.json`` and ``identity.json`` (written after it) are
    there, and reused only when ``identity`` (its models' weights, data, options) is what it was computed from;
    otherwise an error naming the difference, or, with ``overwrite``, computed again. An incomplete stage (an
    interruption) is computed again."""
    from recall_circuits.runs.artefacts import SUMMARY_FILE as RUN_SUMMARY  # noqa: PLC0415

    if (out / RUN_SUMMARY).is_file() and (out / IDENTITY_FILE).is_file():
        try:
            check_same(read_json(out / IDENTITY_FILE), identity, out)
            log.info("stage %s: complete, skipped", out.name)
            return read_json(out / RUN_SUMMARY)
        except RecallCircuitsError:
            if not overwrite:
                raise
            log.info("stage %s: its inputs changed, computing it again (--overwrite)", out.name)
    log.info("stage %s: %s", out.name, what)
    result = run()
    write_json(out / IDENTITY_FILE, identity, indent=2, sort_keys=True)
    return result


@dataclass
class _Ctx:
    """What every stage of one reproduction shares: the data, the options, and a memo of model identities (the
    weights are hashed once per call, after fine-tuning)."""

    data: Path
    quick: bool
    overwrite: bool
    verbose: bool
    device: str = "cpu"
    dtype: str = "float32"
    _ids: dict[str, Any] = field(default_factory=dict)

    def model(self, name_or_dir: str | Path) -> dict[str, Any]:
        from recall_circuits.models.registry import resolve_model  # noqa: PLC0415

        path = resolve_model(str(name_or_dir))
        if str(path) not in self._ids:
            self._ids[str(path)] = model_identity(path)
        return self._ids[str(path)]

    def identity(self, models: dict[str, str | Path], upstream: tuple[Path, ...] = (), **options: Any
                 ) -> dict[str, Any]:
        return {"models": {k: self.model(v) for k, v in models.items()}, "data": data_identity(self.data),
                "upstream": {p.name: read_json(p / IDENTITY_FILE) for p in upstream},
                "options": {"quick": self.quick, "dtype": self.dtype, **options}}

    def stage(self, out: Path, what: str, run: Callable[[], dict[str, Any]], identity: dict[str, Any]
              ) -> dict[str, Any]:
        return _stage(out, what, run, identity, self.overwrite)


def _trace(ctx: _Ctx, out: Path, base: str, finetuned: Path) -> dict[str, Any]:
    from recall_circuits.attribution.trace import TraceConfig  # noqa: PLC0415
    from recall_circuits.runs.gradient_trace import TraceRunConfig, run_gradient_trace  # noqa: PLC0415

    cfg = TraceRunConfig(base=base, finetuned=str(finetuned), data=str(ctx.data), out=str(out),
                         trace=TraceConfig(n_people=4 if ctx.quick else 20), n_random=2, device=ctx.device,
                         dtype=ctx.dtype)
    return ctx.stage(out, "gradient trace + restore ablation",
                     lambda: run_gradient_trace(cfg, overwrite=True, verbose=ctx.verbose),
                     ctx.identity({"base": base, "finetuned": finetuned}))


def _graft(ctx: _Ctx, out: Path, base: str, finetuned: Path, trace_dir: Path) -> dict[str, Any]:
    from recall_circuits.interventions.grafting import GraftConfig, run_grafting  # noqa: PLC0415

    q = ctx.quick
    cfg = GraftConfig(init_frac=0.02 if q else 1e-3, steps=6 if q else 30, eval_every=3 if q else 10)
    return ctx.stage(out, "grafting", lambda: run_grafting(
        base, str(finetuned), str(ctx.data), str(out), cfg, trace_dir=str(trace_dir), overwrite=True,
        verbose=ctx.verbose, device=ctx.device, dtype=ctx.dtype), ctx.identity({"base": base, "finetuned": finetuned}, (trace_dir,)))


def _heads(ctx: _Ctx, out: Path, base: str, finetuned: Path, trace_dir: Path, graft_dir: Path,
           patching_dir: Path) -> dict[str, Any]:
    from recall_circuits.interventions.head_ablation import run_head_ablation  # noqa: PLC0415

    return ctx.stage(out, "head-ablation curves and single-head sweep", lambda: run_head_ablation(
        base, str(finetuned), str(ctx.data), str(out), trace_dir=str(trace_dir), graft_dir=str(graft_dir),
        patching_dir=str(patching_dir), n_random=3, single=True, max_people=None if ctx.quick else 5,
        overwrite=True, verbose=ctx.verbose, device=ctx.device, dtype=ctx.dtype),
        ctx.identity({"base": base, "finetuned": finetuned}, (trace_dir, graft_dir, patching_dir)))


def _patching(ctx: _Ctx, out: Path, finetuned: Path) -> dict[str, Any]:
    from recall_circuits.interventions.patching import run_activation_patching  # noqa: PLC0415

    return ctx.stage(out, "activation patching (same format, across formats, attribution)", lambda:
                     run_activation_patching(str(finetuned), str(ctx.data), str(out), n_pairs=2, overwrite=True,
                                             device=ctx.device, dtype=ctx.dtype),
                     ctx.identity({"finetuned": finetuned}))


def _attention(ctx: _Ctx, out: Path, models: dict[str, str]) -> dict[str, Any]:
    from recall_circuits.compare.attention import run_attention_compare  # noqa: PLC0415

    return ctx.stage(out, "BIO-vs-QA attention", lambda: run_attention_compare(
        models, str(ctx.data), str(out), n_people=3 if ctx.quick else 10, overwrite=True, device=ctx.device,
        dtype=ctx.dtype), ctx.identity(models))


def _consistency(ctx: _Ctx, out: Path, models: dict[str, str], along: dict[str, str] | None = None
                 ) -> dict[str, Any]:
    from recall_circuits.compare.consistency import run_consistency  # noqa: PLC0415

    return ctx.stage(out, "gradient / representation consistency, probe, input signature", lambda: run_consistency(
        models, str(ctx.data), str(out), n_people=2 if ctx.quick else 10, along=along or None, overwrite=True,
        device=ctx.device, dtype=ctx.dtype),
        ctx.identity(models, along=sorted(along or {})))


def _headline(r: dict[str, Any]) -> dict[str, Any]:
    keys = ("qa_id_acc", "qa_ood_acc", "qa_id_first_token_acc", "qa_ood_first_token_acc", "bio_recall_id",
            "bio_recall_ood", "train_wall_s")
    return {k: r.get(k) for k in keys}


def check_out(out: str | Path, *, quick: bool, model: str | None, overwrite: bool) -> dict[str, Any]:
    """Validate the run folder before any work: ``out`` is new, empty, or a reproduction started with the same
    preset and model (``run.json``); otherwise a one-line error (``overwrite``: the stages whose inputs changed are
    computed again). Returns what ``run.json`` is to hold."""
    out = Path(out)
    want = {"preset": "tiny" if quick else "cpu",
            "model": model or preset(TRAIN_PRESETS, "tiny" if quick else "cpu")["model"]}
    if out.exists() and not out.is_dir():
        raise RecallCircuitsError(f"--out {out} is a file")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        if not (out / RUN_FILE).is_file():
            raise RecallCircuitsError(f"--out {out} is not empty and holds no reproduction ({RUN_FILE}): choose "
                                      "another folder")
        check_same(read_json(out / RUN_FILE), want, out)
    return want


def reproduce(out: str | Path, *, quick: bool = False, sensitivity: bool = False, model: str | None = None,
              verbose: bool = True, overwrite: bool = False, device: str = "cpu", dtype: str = "float32"
              ) -> dict[str, Any]:
    """Run (or resume) the reproduction into ``out``; return the summary.

    Every stage records what it was computed from (model weights, data, options) and is reused only when those
    are unchanged; a change is an error naming it, unless ``overwrite``, which computes the changed stages again."""
    out = Path(out)
    run_id = check_out(out, quick=quick, model=model, overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / RUN_FILE, run_id, indent=2)
    t0 = time.time()
    name = run_id["preset"]
    extra: dict[str, Any] = ({"model": model} if model else {}) | {"device": device}
    if dtype == "bfloat16":
        extra["bf16"] = True
    data = out / "data"
    data_cfg = DataConfig(**preset(DATA_PRESETS, name))
    if (data / "manifest.json").is_file():
        try:
            check_same(read_json(data / "manifest.json").get("config"),
                       json.loads(json.dumps(dataclasses.asdict(data_cfg))), data)
        except RecallCircuitsError:
            if not overwrite:
                raise
            shutil.rmtree(data)
    if not (data / "manifest.json").is_file():
        log.info("stage data: generating (%s preset)", name)
        write_dataset(generate(data_cfg), data, overwrite=True)
    ctx = _Ctx(data, quick, overwrite, verbose, device, dtype)
    runs = {s: _finetune(out / s, data, s, name, extra, verbose, overwrite, ctx.model) for s in ("two-stage", "mixed")}
    base_model = run_id["model"]
    ft = {s: out / s / "model" for s in ("two-stage", "mixed")}
    traces = {s: _trace(ctx, out / f"trace-{s}", base_model, ft[s]) for s in ft}
    grafts = {s: _graft(ctx, out / f"graft-{s}", base_model, ft[s], out / f"trace-{s}") for s in ft}
    patching = {s: _patching(ctx, out / f"patching-{s}", ft[s]) for s in ft}
    heads = {s: _heads(ctx, out / f"heads-{s}", base_model, ft[s], out / f"trace-{s}", out / f"graft-{s}",
                       out / f"patching-{s}") for s in ft}
    attention = _attention(ctx, out / "attention", {"mixed": str(ft["mixed"]), "two-stage": str(ft["two-stage"]),
                                                     "pretrained": base_model})
    consistency = _consistency(ctx, out / "consistency", {"mixed": str(ft["mixed"]), "two-stage": str(ft["two-stage"])},
                               {s: str(out / s) for s in ft if (out / s / "snapshots").is_dir()})
    sens = _sensitivity(out, data, name, extra, runs, train=sensitivity, verbose=verbose, overwrite=overwrite,
                        hashed=ctx.model)
    summary = summarise(runs, sens, traces, consistency)
    summary["head_curves"] = {s: h["curves"] for s, h in heads.items()}
    summary["head_gqa_note"] = next(iter(heads.values()))["gqa_note"]
    summary["single_head"] = {s: _single_head_summary(h) for s, h in heads.items()}
    summary["patching"] = {s: {k: p[k] for k in ("corrupted_metric", "clean_metric", "roles",
                                                 "cross_format_by_layer_role", "attribution_vs_exact_corr")}
                           for s, p in patching.items()}
    summary["attention"] = {m: {k: v[k] for k in ("n_subject_linking", "n_relation_focusing", "mean_similarity",
                                                 "viewed_heads", "mean_mass")}
                            for m, v in attention["models"].items()}
    summary["grafting"] = {s: {k: g.get(k) for k in ("alpha", "graft_size", "P", "grafted", "shared_share_of_graft",
                                                     "grafted_without_shared", "acc_lost_without_shared")}
                           for s, g in grafts.items()}
    summary["consistency_probe"] = {m: v.get("probe") for m, v in consistency["models"].items()}
    summary["gradient_consistency_along"] = consistency.get("along")
    summary["preset"] = name
    summary["models"] = {"base": {"name": base_model, **ctx.model(base_model)},
                         **{s: {"path": str(p), **ctx.model(p)} for s, p in ft.items()}}
    summary["data"] = {"path": str(data), "config": read_json(data / "manifest.json").get("config"),
                       "sha256": data_identity(data)}
    summary["wall_s_this_invocation"] = time.time() - t0
    write_json(out / SUMMARY_FILE, summary, indent=2, sort_keys=True)
    write_report(out / REPORT_FILE, summary, out)
    return summary


def _single_head_summary(h: dict[str, Any]) -> dict[str, Any]:
    """Baseline and the heads whose lone restore costs most (QA-OOD exact match; ID answer log-probability)."""
    return {"baseline": h.get("single_head_baseline"), "top_ood_drop": h.get("single_head_top_ood_drop"),
            "top_id_logprob_drop": (h.get("single_head_top_id_logprob_drop") or [])[:5]}


def _sensitivity(out: Path, data: Path, name: str, extra: dict[str, Any], runs: dict[str, dict[str, Any]], *,
                 train: bool, verbose: bool, overwrite: bool, hashed: Callable[[str], dict[str, Any]]
                 ) -> list[dict[str, Any]]:
    """Rows of the learning-rate sensitivity table: trained when ``train``, else read from the runs on disk
    (``None`` where a run is missing)."""
    from recall_circuits.training.run import RESULTS_FILE  # noqa: PLC0415

    base_lr = preset(TRAIN_PRESETS, name)["lr"]
    rows = []
    for lr_name in SENSITIVITY_QA_LRS:
        lr = float(lr_name)
        if lr == base_lr:
            ts, mx = runs["two-stage"], runs["mixed"]
        else:
            ts_dir, mx_dir = out / f"two-stage-qalr{lr_name}", out / f"mixed-lr{lr_name}"
            if train:
                ts = _finetune(ts_dir, data, "two-stage", name,
                               extra | {"model": str(out / "two-stage" / "after_bio"), "bio_epochs": 0,
                                        "qa_lr": lr}, verbose, overwrite, hashed)
                mx = _finetune(mx_dir, data, "mixed", name, extra | {"lr": lr}, verbose, overwrite, hashed)
            else:
                ts, mx = (read_json(d / RESULTS_FILE) if (d / RESULTS_FILE).is_file() else None
                          for d in (ts_dir, mx_dir))
        if ts is None and mx is None:
            continue
        rows.append({"qa_phase_lr": lr, "two-stage": _headline(ts) if ts else None,
                     "mixed": _headline(mx) if mx else None})
    return rows


def _rel_drop(abl: dict[str, dict[str, Any]], cond: str, key: str = "qa_ood_acc") -> float:
    """Share of the unablated accuracy lost when ``cond`` is restored (0 when the unablated accuracy is 0)."""
    before = abl["none"][key]
    return 0.0 if before == 0 else (before - abl[cond][key]) / before


PREMISE_LEARNED = ("both recipes answer the trained questions (QA-ID >= 0.9) and memorise the biographies (BIO "
                   "recall >= 0.9 on ID and OOD people; two-stage after its BIO phase)")
PREMISE_GAP = "the QA-OOD gap is there to explain (the qa_ood_gap direction holds)"


def _apply_premises(directions: list[dict[str, Any]], *, learned: bool) -> None:
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


def summarise(runs: dict[str, dict[str, Any]], sens: list[dict[str, Any]],
              traces: dict[str, dict[str, Any]] | None = None,
              consistency: dict[str, Any] | None = None) -> dict[str, Any]:
    ts, mx = runs["two-stage"], runs["mixed"]
    ts_bio = ts.get("after_bio", ts)
    memorised = min(ts_bio.get("bio_recall_id", 0), ts_bio.get("bio_recall_ood", 0),
                    mx.get("bio_recall_id", 0), mx.get("bio_recall_ood", 0))
    gap = mx["qa_ood_acc"] - ts["qa_ood_acc"]
    directions = [{
        "name": "qa_ood_gap",
        "reproduced": bool(gap >= TARGET_GAP and memorised >= 0.9 and min(ts["qa_id_acc"], mx["qa_id_acc"]) >= 0.9),
        "measured": {"mixed_qa_ood": mx["qa_ood_acc"], "two_stage_qa_ood": ts["qa_ood_acc"], "gap": gap,
                     "min_bio_recall": memorised, "mixed_qa_id": mx["qa_id_acc"], "two_stage_qa_id": ts["qa_id_acc"],
                     "rule": f"gap >= {TARGET_GAP}, both QA-ID >= 0.9, BIO recall >= 0.9 (two-stage: after its BIO "
                             "phase)"},
        "paper": PAPER["qa_ood_gap"],
    }]
    if traces:
        tt, tm = traces["two-stage"], traces["mixed"]
        directions.append({
            "name": "shared_fraction",
            "reproduced": bool(tm["shared_fraction"] > tt["shared_fraction"]
                               and min(tm["shared_fraction"], tt["shared_fraction"]) > tm["chance_fraction"]),
            "measured": {"k": tm["k"], "mixed": tm["shared_fraction"], "two_stage": tt["shared_fraction"],
                         "chance": tm["chance_fraction"],
                         "ratio_mixed_over_stage": tm["shared_fraction"] / max(tt["shared_fraction"], 1e-12),
                         "rule": "|S_k|/k(mixed) > |S_k|/k(two-stage) > chance k/P at the run's k"},
            "paper": PAPER["shared_fraction"]})
        directions.append({
            "name": "head_concentration",
            "reproduced": bool(tm["top10pct_head_share"] > tt["top10pct_head_share"]),
            "measured": {"mixed_top10pct_head_share": tm["top10pct_head_share"],
                         "two_stage_top10pct_head_share": tt["top10pct_head_share"],
                         "mixed_head_gini": tm["head_gini"], "two_stage_head_gini": tt["head_gini"],
                         "rule": "share of attention-shared entries in the top 10% of heads larger under mixed"},
            "paper": PAPER["head_concentration"]})
        am, at = tm["ablation"], tt["ablation"]
        rnd = [c for c in am if c.startswith("random")]
        m_drop, t_drop = _rel_drop(am, "shared"), _rel_drop(at, "shared")
        m_rand = max(_rel_drop(am, c) for c in rnd)
        directions.append({
            "name": "restore_ablation",
            "reproduced": bool(m_drop > t_drop and m_drop > m_rand),
            "measured": {"mixed_rel_qa_ood_drop_shared": m_drop, "two_stage_rel_qa_ood_drop_shared": t_drop,
                         "mixed_rel_qa_ood_drop_random_max": m_rand,
                         "mixed_qa_ood": {c: v["qa_ood_acc"] for c, v in am.items()},
                         "two_stage_qa_ood": {c: v["qa_ood_acc"] for c, v in at.items()},
                         "rule": "relative QA-OOD loss when S is restored: mixed > two-stage, and mixed's loss under S "
                                 "> under every random same-size control (0 where the unablated accuracy is 0)"},
            "paper": PAPER["restore_ablation"]})
    else:
        for key in ("shared_fraction", "head_concentration", "restore_ablation"):
            directions.append({"name": key, "reproduced": None, "measured": "not run", "paper": PAPER[key]})
    if consistency:
        cm, ct = consistency["models"]["mixed"], consistency["models"]["two-stage"]
        keys = ("gradient_cosine", "mean_representation_cosine", "subject_relation_share")
        directions.append({
            "name": "consistency",
            "reproduced": bool(all(cm[k] > ct[k] for k in keys)),
            "measured": {**{f"mixed_{k}": cm[k] for k in keys}, **{f"two_stage_{k}": ct[k] for k in keys},
                         "mixed_retrieval_acc_last_layer": cm["retrieval_acc"][-1],
                         "two_stage_retrieval_acc_last_layer": ct["retrieval_acc"][-1],
                         "rule": "mixed > two-stage on gradient cosine, mean representation cosine over layers and "
                                 "the BIO input-signature share on subject + relation tokens (OOD people)"},
            "paper": PAPER["consistency"]})
    else:
        directions.append({"name": "consistency", "reproduced": None, "measured": "not run",
                           "paper": PAPER["consistency"]})
    _apply_premises(directions, learned=bool(memorised >= 0.9 and min(ts["qa_id_acc"], mx["qa_id_acc"]) >= 0.9))
    return {"directions": directions, "runs": {k: _headline(v) | {"after_bio": _headline(v["after_bio"])}
                                               if "after_bio" in v else _headline(v) for k, v in runs.items()},
            "per_attribute": {k: {"qa_ood": v["qa_ood_per_attribute"], "qa_id": v["qa_id_per_attribute"]}
                              for k, v in runs.items()},
            "sensitivity": sens,
            "traces": {k: {key: v.get(key) for key in ("k", "P", "shared_fraction", "chance_fraction", "curve",
                                                       "top10pct_head_share", "head_gini", "ablation", "top_heads")}
                       for k, v in (traces or {}).items()}}


def _measured_text(measured: Any) -> str:
    """A direction's numbers as 'name value' pairs (rules and nested tables left to summary.json)."""
    if not isinstance(measured, dict):
        return str(measured)
    return "; ".join(f"{k.replace('_', ' ')} {v:.3f}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
                     for k, v in measured.items() if k != "rule" and isinstance(v, (int, float)))


def _table(rows: list[list[Any]], header: list[str]) -> str:
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))  # noqa: E731
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(path: Path, summary: dict[str, Any], run_dir: Path | None = None) -> None:
    """A self-contained HTML report (plotly inlined once; no external script, font or CDN reference)."""
    import plotly.graph_objects as go  # noqa: PLC0415
    import plotly.io as pio  # noqa: PLC0415

    runs = summary["runs"]
    metrics = ["qa_id_acc", "qa_ood_acc", "bio_recall_id", "bio_recall_ood"]
    what = []
    for role, m in (summary.get("models") or {}).items():
        digest = ", ".join(f"{f} sha256 {h[:12]}…" for f, h in m.get("sha256", {}).items())
        what.append([role, m.get("name") or m.get("path"), digest])
    if summary.get("data"):
        d = summary["data"]
        cfg = d.get("config") or {}
        what.append(["data", d["path"], f"{cfg.get('n_people')} people, seed {cfg.get('seed')}, "
                     f"{'full-name' if cfg.get('fullname') else 'pronoun'} biographies; qa.jsonl sha256 "
                     f"{(d['sha256'].get('qa.jsonl') or '')[:12]}…"])
    fig = go.Figure([go.Bar(name=s, x=metrics, y=[runs[s][m] for m in metrics]) for s in runs])
    fig.update_layout(barmode="group", title="QA accuracy and BIO recall by training strategy", yaxis_range=[0, 1])
    parts = (["<h2>What was run</h2>" + _table(what, ["", "model or data", "identity"])] if what else [])
    parts.append(pio.to_html(fig, full_html=False, include_plotlyjs=True))
    if not all(d.get("premise_holds", True) for d in summary["directions"]):
        parts.insert(0, "<div class='banner'><b>Undecided.</b> The models did not learn what the paper's directions "
                     "presuppose (" + html.escape(PREMISE_LEARNED) + ", and a QA-OOD gap to explain), so the "
                     "directions below are marked undecided, whatever their rules compute.</div>")
    parts.append("<h2>The paper's five directions</h2>" + _table(
        [[d["name"], d.get("verdict", str(d["reproduced"])), _measured_text(d["measured"]), d["paper"],
          d["measured"].get("rule", "") if isinstance(d["measured"], dict) else ""]
         for d in summary["directions"]], ["direction", "verdict", "measured here", "paper", "rule"]))
    parts.append("<h2>Runs</h2>" + _table([[s, *[r.get(m) for m in (*metrics, "train_wall_s")]]
                                           for s, r in runs.items()], ["strategy", *metrics, "train_wall_s"]))
    if "after_bio" in runs.get("two-stage", {}):
        ab = runs["two-stage"]["after_bio"]
        parts.append("<p>Two-stage after its BIO phase: " + ", ".join(f"{m} {ab[m]:.3f}" for m in metrics) + "</p>")
    if summary.get("traces"):
        from recall_circuits.runs.artefacts import load_tensors  # noqa: PLC0415
        from recall_circuits.runs.viz import head_heatmap, shared_curve_figure  # noqa: PLC0415

        tr = summary["traces"]
        parts.append("<h2>Cross-task gradient trace</h2>")
        parts.append(pio.to_html(shared_curve_figure({s: t["curve"] for s, t in tr.items()}), full_html=False,
                                 include_plotlyjs=False))
        for s, t in tr.items():
            if run_dir is not None and (run_dir / f"trace-{s}" / "result.safetensors").is_file():
                per_head = load_tensors(run_dir / f"trace-{s}")["shared_per_head"]
                fig = head_heatmap(per_head, f"{s}: Shared Size per head (k={t['k']})", "shared entries")
                parts.append(pio.to_html(fig, full_html=False, include_plotlyjs=False))
        conds = list(next(iter(tr.values()))["ablation"])
        parts.append("<h3>Restore ablation (QA accuracy with the set restored to pretrained values)</h3>" + _table(
            [[s, c, t["ablation"][c]["n_restored"], t["ablation"][c]["qa_id_acc"], t["ablation"][c]["qa_ood_acc"]]
             for s, t in tr.items() for c in conds], ["strategy", "restored set", "entries", "qa_id", "qa_ood"]))
    if summary.get("head_curves"):
        fig = go.Figure()
        for strat, curves in summary["head_curves"].items():
            for name, c in curves.items():
                fig.add_trace(go.Scatter(x=[p["n"] for p in c["points"]], y=[p["qa_ood_acc"] for p in c["points"]],
                                         mode="lines+markers", name=f"{strat}: {name}"))
        fig.update_layout(title="QA-OOD accuracy with the top-n heads restored to pretrained weights",
                          xaxis_title="heads restored", yaxis_title="QA-OOD accuracy", yaxis_range=[0, 1])
        parts.append("<h2>Head ablation</h2><p>" + html.escape(summary.get("head_gqa_note", "")) + "</p>"
                     + pio.to_html(fig, full_html=False, include_plotlyjs=False))
    if summary.get("attention"):
        rows = [[m, a["mean_similarity"], a["n_subject_linking"], a["n_relation_focusing"],
                 a["mean_mass"]["bio"]["subject"], a["mean_mass"]["qa"]["subject"], ", ".join(a["viewed_heads"])]
                for m, a in summary["attention"].items()]
        parts.append("<h2>BIO vs QA attention (predicting position, aligned by role)</h2>" + _table(
            rows, ["model", "mean BIO–QA similarity", "subject-linking heads", "relation-focusing heads",
                   "subject mass BIO", "subject mass QA", "heads viewed"]))
        if run_dir is not None:
            for m in summary["attention"]:
                f = run_dir / "attention" / "figures" / f"circuitsvis_{m}.html"
                if f.is_file():
                    body = f.read_text(encoding="utf-8")
                    body = body[body.index("<body>") + 6: body.rindex("</body>")]
                    parts.append(f"<details><summary>circuitsvis: {html.escape(m)}</summary>{body}</details>")
    cons = next((d for d in summary["directions"] if d["name"] == "consistency"), None)
    if cons and isinstance(cons["measured"], dict):
        m = cons["measured"]
        parts.append("<h2>Consistency of BIO and QA (OOD people)</h2>" + _table(
            [[s, m[f"{p}_gradient_cosine"], m[f"{p}_mean_representation_cosine"], m[f"{p}_subject_relation_share"],
              m[f"{p}_retrieval_acc_last_layer"]] for s, p in (("mixed", "mixed"), ("two-stage", "two_stage"))],
            ["strategy", "gradient cosine", "mean representation cosine", "input share on subject+relation",
             "cross-format retrieval (last layer)"]))
    probe = {m: p for m, p in (summary.get("consistency_probe") or {}).items() if p}
    if probe:
        rows = [[m, max(p["bio_to_qa"]), int(max(range(len(p["bio_to_qa"])), key=p["bio_to_qa"].__getitem__)),
                 max(p["qa_to_bio"]), p["chance"]] for m, p in probe.items()]
        parts.append("<h3>Linear probe for the value's first token, trained on one format, tested on the other</h3>"
                     + _table(rows, ["model", "best BIO→QA accuracy", "at layer", "best QA→BIO accuracy",
                                     "chance (majority)"]))
    if summary.get("gradient_consistency_along"):
        fig = go.Figure([go.Scatter(x=[p["step"] for p in pts], y=[p["gradient_cosine"] for p in pts],
                                    mode="lines+markers", name=m)
                         for m, pts in summary["gradient_consistency_along"].items()])
        fig.update_layout(title="Gradient consistency (cos ∇L_BIO, ∇L_QA) along training", xaxis_title="step",
                          yaxis_title="mean cosine (OOD people)")
        parts.append(pio.to_html(fig, full_html=False, include_plotlyjs=False))
    if summary.get("grafting"):
        rows = [[s, g["alpha"], g["grafted"]["qa_id_acc"], g["grafted"]["qa_ood_acc"], g.get("shared_share_of_graft"),
                 (g.get("acc_lost_without_shared") or {}).get("qa_ood_acc")] for s, g in summary["grafting"].items()]
        parts.append("<h2>Grafting</h2>" + _table(rows, ["strategy", "alpha = |γ|/P", "grafted qa_id",
                                                         "grafted qa_ood", "share of S in γ",
                                                         "qa_ood lost without S"]))
    if summary.get("patching"):
        rows = []
        for st, pt in summary["patching"].items():
            rows.append([st, sum(pt["clean_metric"]) / len(pt["clean_metric"]),
                         sum(pt["corrupted_metric"]) / len(pt["corrupted_metric"]), pt["attribution_vs_exact_corr"]])
        parts.append("<h2>Activation patching (QA, OOD people: clean person patched into a corrupted one)</h2>"
                     + _table(rows, ["strategy", "clean logit diff", "corrupted logit diff",
                                     "corr(attribution, exact) over cells"]))
        if run_dir is not None:
            for st in summary["patching"]:
                for fig_name in ("heads", "cross_format"):
                    f = run_dir / f"patching-{st}" / "figures" / f"{fig_name}.json"
                    if f.is_file():
                        fig = pio.from_json(f.read_text())
                        fig.update_layout(title=f"{st}: {fig.layout.title.text}")
                        parts.append(pio.to_html(fig, full_html=False, include_plotlyjs=False))
    if summary.get("single_head"):
        rows = [[st, ", ".join(f"{d['head']} ({d['drop']:+.3f})" for d in (sh.get("top_ood_drop") or [])[:5]),
                 ", ".join(f"{d['head']} ({d['drop']:+.3f})" for d in (sh.get("top_id_logprob_drop") or []))]
                for st, sh in summary["single_head"].items()]
        parts.append("<h3>Single-head restores: the heads whose lone restore costs most</h3>" + _table(
            rows, ["strategy", "QA-OOD exact match drop", "QA-ID log P(answer) drop (nats)"]))
    if summary.get("sensitivity"):
        rows = []
        for r in summary["sensitivity"]:
            for st in ("two-stage", "mixed"):
                h = r[st] or {}
                rows.append([r["qa_phase_lr"], st, *[h.get(m, "not run") for m in
                                                    ("qa_id_acc", "qa_ood_acc", "bio_recall_id", "bio_recall_ood")]])
        parts.append("<h2>Sensitivity to the learning rate of the QA-training phase</h2><p>two-stage: the QA phase "
                     "from the same after-BIO model at this learning rate; mixed: the whole run at this learning "
                     "rate.</p>" + _table(rows, ["QA-phase lr", "strategy", "qa_id", "qa_ood", "bio_recall_id",
                                                "bio_recall_ood"]))
    style = "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;" \
            "padding:4px 8px;font-size:13px}.banner{background:#fff3cd;border:1px solid #e0c36c;padding:10px;" \
            "margin:1em 0}"
    doc = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>recall_circuits report</title>"
           f"<style>{style}</style></head><body><h1>recall_circuits reproduction ({summary.get('preset', '')})</h1>"
           + "".join(parts) + "</body></html>")
    write_text_atomic(path, share_circuitsvis(doc))
