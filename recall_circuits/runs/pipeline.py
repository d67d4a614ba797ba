"""The end-to-end reproduction: data → two-stage and mixed fine-tuning → evaluation → report.

Each stage writes its own directory under ``out`` and is skipped when complete, so a rerun after an interruption
resumes (fine-tuning resumes from its last checkpoint). ``summary.json`` lists the five directions of docs/paper.md §7,
each decided from the numbers measured in this run by :mod:`~recall_circuits.runs.verdicts`;
:mod:`~recall_circuits.runs.report` renders ``report.html`` from it.

Layout of ``out``: ``data/``, ``two-stage/``, ``mixed/`` (each with ``results.json``), optional sensitivity runs
``two-stage-qalr{lr}/`` and ``mixed-lr{lr}/``, ``summary.json``, ``report.html``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from recall_circuits.artefacts import check_same, code_identity, difference, model_identity, read_json, write_json
from recall_circuits.attribution.trace import TraceConfig
from recall_circuits.data.bios import DataConfig, data_identity, generate, write_dataset
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.files import (
    IDENTITY_FILE,
    MANIFEST_FILE,
    REPORT_FILE,
    RESULTS_FILE,
    RUN_FILE,
    SNAPSHOTS_DIR,
    SUMMARY_FILE,
    TRAIN_META,
)
from recall_circuits.interventions.grafting import GraftConfig
from recall_circuits.models.registry import resolve_model
from recall_circuits.runs.regime import load_record, search_state
from recall_circuits.runs.report import write_report
from recall_circuits.runs.stages import attention, consistency, graft, heads, patching, trace
from recall_circuits.runs.stages.base import StageSummary
from recall_circuits.runs.stages.finetune import run_finetune
from recall_circuits.runs.stages.side_by_side import run_processes, run_side_by_side
from recall_circuits.runs.summary import GraftRow, PatchingRow, ReproductionSummary, SingleHead
from recall_circuits.runs.verdicts import headline, summarise
from recall_circuits.training.curve import run_logs
from recall_circuits.training.loop import TrainConfig, train_identity
from recall_circuits.training.presets import DATA_PRESETS, SENSITIVITY_QA_LRS, TRAIN_PRESETS, preset, train_preset

log = logging.getLogger(__name__)
S = TypeVar("S", bound=StageSummary)


def _train_cfg(out: Path, data: Path, strategy: str, name: str, extra: dict[str, Any]) -> dict[str, Any]:
    """A recipe's ``TrainConfig`` fields: the preset for the device (bfloat16 only where it is native), ``extra``
    over it."""
    return (train_preset(name, extra.get("device"), extra.get("bf16")) | extra
            | {"strategy": strategy, "data": str(data), "out": str(out)})


TRAINING_KEYS = ("epochs", "bio_epochs", "mix_qa_repeat", "lr", "qa_lr", "schedule", "warmup_frac", "batch_size",
                 "freeze_embeddings", "bf16", "seed")


def training_settings(results: dict[str, Any]) -> dict[str, Any]:
    """What a fine-tuning run trained with (from its ``results.json``): the options that change what is trained and
    the optimiser steps it made, for the summary and the report's "What was run"."""
    cfg = results.get("config") or {}
    return {k: cfg.get(k) for k in TRAINING_KEYS} | {"steps": results.get("steps")}


def _finetune(out: Path, data: Path, strategy: str, name: str, extra: dict[str, Any],
              verbose: bool, overwrite: bool, hashed: Callable[[str], dict[str, Any]],
              stale: dict[str, str] | None = None, run: bool = True) -> dict[str, Any] | None:
    """A fine-tuning stage: reused only when it was trained from the same base weights, data and options. With
    ``stale`` (a report-only pass) nothing is trained: a finished run is read and an identity that differs is
    recorded in ``stale``. ``run=False``: check and clear as usual, but return None instead of training."""
    cfg = _train_cfg(out, data, strategy, name, extra)
    tc = TrainConfig(**cfg)
    identity = train_identity(tc, resolve_model(tc.model), hashed(tc.model))
    if stale is not None:
        return _read_finished(out, out / RESULTS_FILE, out / TRAIN_META, identity, stale, key="identity")
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
    if not run:
        return None
    log.info("stage %s: fine-tuning (%s)", out.name, strategy)
    res = run_finetune(cfg, resume=out.exists(), overwrite=False, verbose=verbose)
    assert res is not None
    return res


def _read_finished(out: Path, result: Path, identity_file: Path, identity: dict[str, Any], stale: dict[str, str],
                   key: str | None = None) -> dict[str, Any]:
    """A report-only pass: the stage's result, recording in ``stale`` what it was computed from that differs from
    ``identity`` (what a run would use now); an error when the stage is not finished."""
    if not result.is_file() or not identity_file.is_file():
        raise RecallCircuitsError(f"stage {out.name} is not finished in {out.parent}: run the reproduction without "
                                  "--report-only first")
    recorded = read_json(identity_file)
    differs = difference(recorded.get(key) if key else recorded, identity)
    if differs:
        stale[out.name] = differs
    return read_json(result)


def _stage(out: Path, what: str, run: Callable[[], S | None], kind: type[S], identity: dict[str, Any],
           overwrite: bool, stale: dict[str, str] | None = None) -> S:
    """A cached analysis stage: complete when its ``summary.json`` and ``identity.json`` (written after it) are
    there, and reused only when ``identity`` (its models' weights, data, options) is what it was computed from;
    otherwise an error naming the difference, or, with ``overwrite``, computed again. An incomplete stage (an
    interruption) is computed again. With ``stale``, a report-only pass: see :func:`_read_finished`."""
    if stale is not None:
        return kind.from_dict(_read_finished(out, out / SUMMARY_FILE, out / IDENTITY_FILE, identity, stale))
    if (out / SUMMARY_FILE).is_file() and (out / IDENTITY_FILE).is_file():
        try:
            check_same(read_json(out / IDENTITY_FILE), identity, out)
            log.info("stage %s: complete, skipped", out.name)
            return kind.load(out)
        except RecallCircuitsError:
            if not overwrite:
                raise
            log.info("stage %s: its inputs changed, computing it again (--overwrite)", out.name)
    log.info("stage %s: %s", out.name, what)
    result = run()
    assert result is not None        # a stage returns None only in the other processes of a torchrun
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
    stale: dict[str, str] | None = None   # a report-only pass: stage name → first input that differs from now
    _ids: dict[str, Any] = field(default_factory=dict)
    code: str = field(default_factory=code_identity)    # the library's source: analyses are redone when it changes

    def model(self, name_or_dir: str | Path) -> dict[str, Any]:
        path = resolve_model(str(name_or_dir))
        if str(path) not in self._ids:
            self._ids[str(path)] = model_identity(path)
        return self._ids[str(path)]

    def identity(self, models: Mapping[str, str | Path], upstream: tuple[Path, ...] = (), **options: Any
                 ) -> dict[str, Any]:
        return {"models": {k: self.model(v) for k, v in models.items()}, "data": data_identity(self.data),
                "upstream": {p.name: read_json(p / IDENTITY_FILE) for p in upstream},
                "options": {"quick": self.quick, "dtype": self.dtype, **options}, "code": self.code}

    def stage(self, out: Path, what: str, run: Callable[[], S | None], kind: type[S], identity: dict[str, Any]
              ) -> S:
        return _stage(out, what, run, kind, identity, self.overwrite, self.stale)


def _trace(ctx: _Ctx, out: Path, base: str, finetuned: Path) -> trace.TraceSummary:
    cfg = trace.TraceStageConfig(base=base, finetuned=str(finetuned), data=str(ctx.data), out=str(out),
                                 trace=TraceConfig(n_people=4 if ctx.quick else 20), n_random=2, device=ctx.device,
                                 dtype=ctx.dtype, overwrite=True, verbose=ctx.verbose)
    return ctx.stage(out, "gradient trace + restore ablation", lambda: trace.run(cfg), trace.TraceSummary,
                     ctx.identity({"base": base, "finetuned": finetuned}))


def _graft(ctx: _Ctx, out: Path, base: str, finetuned: Path, trace_dir: Path) -> graft.GraftSummary:
    q = ctx.quick
    cfg = graft.GraftStageConfig(
        base, str(finetuned), str(ctx.data), str(out),
        GraftConfig(init_frac=0.02 if q else 1e-3, steps=6 if q else 30, eval_every=3 if q else 10),
        trace_dir=str(trace_dir), overwrite=True, verbose=ctx.verbose, device=ctx.device, dtype=ctx.dtype)
    return ctx.stage(out, "grafting", lambda: graft.run(cfg), graft.GraftSummary,
                     ctx.identity({"base": base, "finetuned": finetuned}, (trace_dir,)))


def _heads(ctx: _Ctx, out: Path, base: str, finetuned: Path, trace_dir: Path, graft_dir: Path,
           patching_dir: Path) -> heads.HeadsSummary:
    cfg = heads.HeadsConfig(base, str(finetuned), str(ctx.data), str(out), trace_dir=str(trace_dir),
                            graft_dir=str(graft_dir), patching_dir=str(patching_dir), n_random=3, single=True,
                            max_people=None if ctx.quick else 5, overwrite=True, verbose=ctx.verbose,
                            device=ctx.device, dtype=ctx.dtype)
    return ctx.stage(out, "head-ablation curves and single-head sweep", lambda: heads.run(cfg), heads.HeadsSummary,
                     ctx.identity({"base": base, "finetuned": finetuned}, (trace_dir, graft_dir, patching_dir)))


def _patching(ctx: _Ctx, out: Path, finetuned: Path) -> patching.PatchingSummary:
    cfg = patching.PatchingConfig(str(finetuned), str(ctx.data), str(out), n_pairs=2, overwrite=True,
                                  device=ctx.device, dtype=ctx.dtype, verbose=ctx.verbose)
    return ctx.stage(out, "activation patching (same format, across formats, attribution)",
                     lambda: patching.run(cfg), patching.PatchingSummary, ctx.identity({"finetuned": finetuned}))


def _attention(ctx: _Ctx, out: Path, models: dict[str, str]) -> attention.AttentionSummary:
    cfg = attention.AttentionConfig(models, str(ctx.data), str(out), n_people=3 if ctx.quick else 10,
                                    overwrite=True, device=ctx.device, dtype=ctx.dtype, verbose=ctx.verbose)
    return ctx.stage(out, "BIO-vs-QA attention", lambda: attention.run(cfg), attention.AttentionSummary,
                     ctx.identity(models))


def _consistency(ctx: _Ctx, out: Path, models: dict[str, str], along: dict[str, str] | None = None
                 ) -> consistency.ConsistencySummary:
    cfg = consistency.ConsistencyConfig(models, str(ctx.data), str(out), n_people=2 if ctx.quick else 10,
                                        along=along or None, overwrite=True, device=ctx.device, dtype=ctx.dtype,
                                        verbose=ctx.verbose)
    return ctx.stage(out, "gradient / representation consistency, probe, input signature",
                     lambda: consistency.run(cfg), consistency.ConsistencySummary,
                     ctx.identity(models, along=sorted(along or {})))


RECIPES = ("two-stage", "mixed")
RECIPE_STAGES = ("trace", "graft", "patching", "heads", "consistency")


@dataclass(frozen=True)
class RecipeAnalyses:
    """One recipe's analysis stages, as their typed summaries."""

    trace: trace.TraceSummary
    graft: graft.GraftSummary
    patching: patching.PatchingSummary
    heads: heads.HeadsSummary
    consistency: consistency.ConsistencySummary


def recipe_analyses(ctx: _Ctx, out: Path, base_model: str, recipe: str) -> RecipeAnalyses:
    """One recipe's own analysis stages, in order: gradient trace + restore ablation, grafting, activation patching,
    head curves, consistency (of the final model and, where the run kept snapshots, along training); each is reused
    when finished from the same inputs."""
    ft, d = out / recipe / "model", {n: out / f"{n}-{recipe}" for n in RECIPE_STAGES}
    tr = _trace(ctx, d["trace"], base_model, ft)
    gr = _graft(ctx, d["graft"], base_model, ft, d["trace"])
    pa = _patching(ctx, d["patching"], ft)
    he = _heads(ctx, d["heads"], base_model, ft, d["trace"], d["graft"], d["patching"])
    along = {recipe: str(out / recipe)} if (out / recipe / SNAPSHOTS_DIR).is_dir() else None
    return RecipeAnalyses(tr, gr, pa, he, _consistency(ctx, d["consistency"], {recipe: str(ft)}, along))


def merge_consistency(per_recipe: dict[str, consistency.ConsistencySummary]) -> consistency.ConsistencySummary:
    """The recipes' consistency stages as one result (the same people in each: a split's first people, sorted):
    every recipe's model measures, and the runs measured along training."""
    people = [c.people for c in per_recipe.values()]
    if any(p != people[0] for p in people):
        raise RecallCircuitsError("the recipes' consistency stages measured different people; run with --overwrite")
    along = {k: v for c in per_recipe.values() for k, v in (c.along or {}).items()}
    return consistency.ConsistencySummary(people=people[0], along=along or None,
                                          models={k: v for c in per_recipe.values() for k, v in c.models.items()})


def _stages_done(out: Path, recipe: str) -> int:
    """How many of a recipe's analysis stages have finished (their ``identity.json`` is written last)."""
    return sum((out / f"{n}-{recipe}" / IDENTITY_FILE).is_file() for n in RECIPE_STAGES)


def _recipe_analyses_side_by_side(ctx: _Ctx, out: Path, base_model: str, verbose: bool) -> None:
    """Each recipe's analysis stages in a child process of its own
    (``python -m recall_circuits.runs.analyse_recipe``, log ``analyses-<recipe>.log``) with half the torch threads,
    as fine-tuning does; this process then reuses the stages the children finished. Recipes whose stages have all
    finished start no child (this process still checks what they were computed from)."""
    todo = [s for s in RECIPES if _stages_done(out, s) < len(RECIPE_STAGES)]
    if not todo:
        return
    threads = max(1, torch.get_num_threads() // len(todo))
    job = {"out": str(out), "base": base_model, "quick": ctx.quick, "overwrite": ctx.overwrite,
           "device": ctx.device, "dtype": ctx.dtype}
    log.info("stages %s of %s: side by side, %d torch thread(s) each", ", ".join(RECIPE_STAGES),
             " and ".join(todo), threads)
    run_processes({s: ["-m", "recall_circuits.runs.analyse_recipe", "--job", json.dumps(job | {"recipe": s}),
                       "--threads", str(threads)] for s in todo},
                  logs=out, threads=threads, what="analyses", verbose=verbose, unit="stage", log_prefix="analyses-",
                  progress=lambda s: (_stages_done(out, s), len(RECIPE_STAGES)))


def check_out(out: str | Path, *, quick: bool, model: str | None, overwrite: bool,
              train_options: dict[str, Any] | None = None, data_options: dict[str, Any] | None = None
              ) -> dict[str, Any]:
    """Validate the run folder before any work: ``out`` is new, empty, or a reproduction started with the same
    preset, model and options over the preset (``run.json``); otherwise a one-line error (``overwrite``: the stages
    whose inputs changed are computed again). Returns what ``run.json`` is to hold."""
    out = Path(out)
    want: dict[str, Any] = {"preset": "tiny" if quick else "cpu",
                            "model": model or preset(TRAIN_PRESETS, "tiny" if quick else "cpu")["model"]}
    if train_options:       # recorded only when given: a reproduction of the preset itself keeps its run.json
        want["train_options"] = json.loads(json.dumps(train_options, sort_keys=True))
    if data_options:
        want["data_options"] = json.loads(json.dumps(data_options, sort_keys=True))
    if out.exists() and not out.is_dir():
        raise RecallCircuitsError(f"--out {out} is a file")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        if not (out / RUN_FILE).is_file():
            raise RecallCircuitsError(f"--out {out} is not empty and holds no reproduction ({RUN_FILE}): choose "
                                      "another folder")
        check_same(read_json(out / RUN_FILE), want, out)
    return want


def reproduce(out: str | Path, *, quick: bool = False, sensitivity: bool = False, model: str | None = None,
              verbose: bool = True, overwrite: bool = False, device: str = "cpu", dtype: str = "float32",
              report_only: bool = False, search_record: str | Path | None = None,
              side_by_side: bool | None = None, train_options: dict[str, Any] | None = None,
              data_options: dict[str, Any] | None = None, analyses: bool = True) -> ReproductionSummary:
    """Run (or resume) the reproduction into ``out``; return the summary.

    ``train_options`` (``TrainConfig`` fields) and ``data_options`` (``DataConfig`` fields) replace the preset's
    (the people-scaling study trains its pairs this way, :mod:`recall_circuits.runs.scale`); both are part of the
    run's identity. ``analyses=False`` stops after fine-tuning and returns ``{"runs": {recipe: results}}`` (no
    summary or report is written); the same call with ``analyses=True`` later reuses the trained recipes.

    Every stage records what it was computed from (model weights, data, options) and is reused only when those
    are unchanged; a change is an error naming it, unless ``overwrite``, which computes the changed stages again.
    ``report_only``: compute nothing, write ``summary.json`` and ``report.html`` again from the finished stages
    (an error if one is missing); stages computed from other inputs than a run would use now (another version of
    the library's code, say) are listed in the summary's ``stale`` and named in the report. ``search_record``: the
    regime search's finished pairs (a folder of ``<id>.json``, e.g. the repository's ``docs/search``), shown in the
    summary's ``search`` and the report's headline. ``side_by_side`` (default: on a CPU): the two recipes
    fine-tune at once, each in a process of its own with half the torch threads
    (:mod:`recall_circuits.runs.stages.side_by_side`); otherwise one after the other in this process."""
    out = Path(out)
    if report_only and not (out / RUN_FILE).is_file():
        raise RecallCircuitsError(f"--report-only: {out} holds no reproduction ({RUN_FILE})")
    run_id = check_out(out, quick=quick, model=model, overwrite=overwrite, train_options=train_options,
                       data_options=data_options)
    search = search_state(load_record(search_record)) if search_record is not None else None   # read before any work
    out.mkdir(parents=True, exist_ok=True)
    if not report_only:
        write_json(out / RUN_FILE, run_id, indent=2)
    t0 = time.time()
    name, base_model = run_id["preset"], run_id["model"]
    extra = _train_extra(model, device, dtype, train_options)
    data = _data_step(out, name, data_options, overwrite=overwrite, report_only=report_only)
    ctx = _Ctx(data, quick, overwrite, verbose, device, dtype, stale={} if report_only else None)
    side_by_side = device == "cpu" if side_by_side is None else side_by_side
    runs = _finetune_step(ctx, out, name, extra, side_by_side)
    if not analyses:
        return ReproductionSummary(runs=runs)
    if side_by_side and not report_only:
        _recipe_analyses_side_by_side(ctx, out, base_model, verbose)
    per_recipe = {s: recipe_analyses(ctx, out, base_model, s) for s in RECIPES}
    att = _attention(ctx, out / "attention", {"mixed": str(out / "mixed" / "model"),
                                              "two-stage": str(out / "two-stage" / "model"), "pretrained": base_model})
    sens = _sensitivity(out, data, name, extra, runs, train=sensitivity and not report_only, verbose=verbose,
                        overwrite=overwrite, hashed=ctx.model)
    summary = _summary(ctx, out, name, base_model, runs, per_recipe, att, sens)
    summary["wall_s_this_invocation"] = (_previous_wall_s(out) if report_only   # the invocation that computed them
                                         else time.time() - t0)
    if search is not None:
        summary["search"] = search
    write_json(out / SUMMARY_FILE, summary, indent=2, sort_keys=True)
    write_report(out / REPORT_FILE, summary, out)
    return summary


def _train_extra(model: str | None, device: str, dtype: str, train_options: dict[str, Any] | None
                 ) -> dict[str, Any]:
    """What the recipes' ``TrainConfig`` takes over the preset: the model, device, precision and given options."""
    extra: dict[str, Any] = ({"model": model} if model else {}) | {"device": device}
    if dtype == "bfloat16":
        extra["bf16"] = True
    return extra | (train_options or {})


def _data_step(out: Path, name: str, data_options: dict[str, Any] | None, *, overwrite: bool,
               report_only: bool) -> Path:
    """The preset's bioS data in ``out/data``: generated once, reused when its config is the same (a changed one is
    an error, or with ``overwrite`` generated again)."""
    data = out / "data"
    data_cfg = DataConfig(**(preset(DATA_PRESETS, name) | (data_options or {})))
    if (data / MANIFEST_FILE).is_file():
        try:
            check_same(read_json(data / MANIFEST_FILE).get("config"),
                       json.loads(json.dumps(dataclasses.asdict(data_cfg))), data)
        except RecallCircuitsError:
            if not overwrite:
                raise
            shutil.rmtree(data)
    if report_only and not (data / MANIFEST_FILE).is_file():
        raise RecallCircuitsError(f"stage data is not finished in {out}: run the reproduction without --report-only")
    if not (data / MANIFEST_FILE).is_file():
        log.info("stage data: generating (%s preset)", name)
        write_dataset(generate(data_cfg), data, overwrite=True)
    return data


def _finetune_step(ctx: _Ctx, out: Path, name: str, extra: dict[str, Any], side_by_side: bool
                   ) -> dict[str, dict[str, Any]]:
    """Both recipes fine-tuned (or reused): side by side in child processes with half the threads each, or one
    after the other in this process; each recipe's ``results.json``."""
    runs = {s: _finetune(out / s, ctx.data, s, name, extra, ctx.verbose, ctx.overwrite, ctx.model, ctx.stale,
                         run=not side_by_side) for s in RECIPES}
    todo = {s: _train_cfg(out / s, ctx.data, s, name, extra) for s, r in runs.items() if r is None}
    if todo:
        threads = max(1, torch.get_num_threads() // len(todo))
        log.info("stages %s: fine-tuning side by side, %d torch thread(s) each", " and ".join(todo), threads)
        runs.update(run_side_by_side(todo, logs=out, threads=threads, verbose=ctx.verbose))
    missing = [s for s, r in runs.items() if r is None]
    if missing:
        raise RecallCircuitsError(f"fine-tuning {', '.join(missing)} did not finish: see its log in {out}")
    return {s: r for s, r in runs.items() if r is not None}


def _summary(ctx: _Ctx, out: Path, name: str, base_model: str, runs: dict[str, dict[str, Any]],
             per_recipe: dict[str, RecipeAnalyses], att: attention.AttentionSummary, sens: list[dict[str, Any]]
             ) -> ReproductionSummary:
    """``summary.json``: the verdicts and the numbers behind them, read from the stages' typed summaries."""
    cons = merge_consistency({s: r.consistency for s, r in per_recipe.items()})
    summary = summarise(runs, sens, {s: r.trace for s, r in per_recipe.items()}, cons)
    summary.update(_analyses_summary(per_recipe, att, cons))
    summary["preset"] = name
    summary["training"] = {s: training_settings(r) for s, r in runs.items()}
    summary["training_loss"] = _training_loss(out)
    summary["models"] = {"base": {"name": base_model, **ctx.model(base_model)},
                         **{s: {"path": str(out / s / "model"), **ctx.model(out / s / "model")} for s in RECIPES}}
    summary["data"] = {"path": str(ctx.data), "config": read_json(ctx.data / MANIFEST_FILE).get("config"),
                       "sha256": data_identity(ctx.data)}
    summary["stale"] = ctx.stale or {}
    return summary


def _previous_wall_s(out: Path) -> float | None:
    """The wall time recorded by the invocation that wrote the summary there, if one did."""
    return (read_json(out / SUMMARY_FILE) if (out / SUMMARY_FILE).is_file() else {}).get("wall_s_this_invocation")


def _training_loss(out: Path) -> dict[str, list[dict[str, Any]]]:
    """Each recipe's training loss over about 50 windows of steps (``TrainingLog.windows``), from its log."""
    logs, every = run_logs({s: out / s for s in RECIPES}, 50)
    return {s: lg.windows(every).to_dict(orient="records") for s, lg in logs.items()}


def _single_head_summary(h: heads.HeadsSummary) -> SingleHead:
    """Baseline and the heads whose lone restore costs most (QA-OOD exact match; ID answer log-probability)."""
    return SingleHead(baseline=h.single_head_baseline, top_ood_drop=h.single_head_top_ood_drop,
                      top_id_logprob_drop=(h.single_head_top_id_logprob_drop or [])[:5])


def _analyses_summary(per_recipe: dict[str, RecipeAnalyses], att: attention.AttentionSummary,
                      cons: consistency.ConsistencySummary) -> ReproductionSummary:
    """The reproduction summary's sections read from the analysis stages' summaries."""
    return ReproductionSummary(
        head_curves={s: r.heads.curves for s, r in per_recipe.items()},
        head_gqa_note=next(iter(per_recipe.values())).heads.gqa_note,
        single_head={s: _single_head_summary(r.heads) for s, r in per_recipe.items()},
        patching={s: _patching_row(r.patching) for s, r in per_recipe.items()},
        attention={m: {k: v[k] for k in ("n_subject_linking", "n_relation_focusing", "mean_similarity",
                                         "viewed_heads", "mean_mass")} for m, v in att.models.items()},
        grafting={s: _graft_row(r.graft) for s, r in per_recipe.items()},
        consistency_probe={m: v.get("probe") for m, v in cons.models.items()},
        gradient_consistency_along=cons.along)


def _patching_row(p: patching.PatchingSummary) -> PatchingRow:
    return PatchingRow(corrupted_metric=p.corrupted_metric, clean_metric=p.clean_metric, roles=p.roles,
                       cross_format_by_layer_role=p.cross_format_by_layer_role,
                       attribution_vs_exact_corr=p.attribution_vs_exact_corr)


def _graft_row(g: graft.GraftSummary) -> GraftRow:
    return GraftRow(alpha=g.alpha, graft_size=g.graft_size, P=g.P, grafted=g.grafted,
                    shared_share_of_graft=g.shared_share_of_graft, grafted_without_shared=g.grafted_without_shared,
                    acc_lost_without_shared=g.acc_lost_without_shared)


def _sensitivity(out: Path, data: Path, name: str, extra: dict[str, Any], runs: dict[str, dict[str, Any]], *,
                 train: bool, verbose: bool, overwrite: bool, hashed: Callable[[str], dict[str, Any]]
                 ) -> list[dict[str, Any]]:
    """Rows of the learning-rate sensitivity table: trained when ``train``, else read from the runs on disk
    (``None`` where a run is missing)."""
    base_lr = preset(TRAIN_PRESETS, name)["lr"]
    rows = []
    ts: dict[str, Any] | None
    mx: dict[str, Any] | None
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
        rows.append({"qa_phase_lr": lr, "two-stage": headline(ts) if ts else None,
                     "mixed": headline(mx) if mx else None})
    return rows
