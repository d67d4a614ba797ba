"""The gradient-trace stage (``analyses/gradient_trace.py``): trace → curve → shared set → head statistics →
restore ablation with controls → run directory."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed

from recall_circuits.artefacts import save_figure, save_tensors, start_run
from recall_circuits.attribution.shared import (
    HeadStats,
    head_stats,
    log_grid,
    random_like_mask,
    shared_curve,
    top_k_mask,
)
from recall_circuits.attribution.trace import DEFAULT_K_FRAC, TraceConfig, TraceResult, cross_task_trace
from recall_circuits.data.bios import Dataset, load_dataset
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.files import SHARED_MASK_FILE
from recall_circuits.interventions.restore import load_mask, restore_ablation, save_mask
from recall_circuits.models.loading import ModelPair, load_pair
from recall_circuits.models.params import ParamSpace
from recall_circuits.models.registry import resolve_model
from recall_circuits.results import head_label
from recall_circuits.runs.stages.base import RunOptions, StageSummary, open_run
from recall_circuits.training.parallel import collective_device, process_group, world
from recall_circuits.viz import head_heatmap, shared_curve_figure

log = logging.getLogger(__name__)
PRETRAINED_LABEL = "pretrained (no fine-tuning)"
ABLATION_NOTE = ("shared = S_k restored to pretrained values; random{i} = same count per tensor, seed i; "
                 "bio_top / qa_top = the |S_k| largest entries of one task alone")


@dataclass(frozen=True, kw_only=True)
class TraceStageConfig(RunOptions):
    base: str
    finetuned: str
    data: str
    out: str
    trace: TraceConfig = TraceConfig()
    k: int | None = None               # size of Top_k for the shared set; None: round(k_frac * P)
    k_frac: float = DEFAULT_K_FRAC
    ablation: bool = True
    n_random: int = 1                  # random control sets (seeds 0..n-1)
    eval_batch_size: int = 32
    max_eval_people: int | None = None
    save_influence: bool = False
    restore_masks: tuple[str, ...] = ()  # extra mask files to restore in the ablation
    # also trace the pretrained model: its |S_k|/k, not k/P, is what a fine-tuned curve is read against (two losses on
    # the same text share much of their gradient structure before any fine-tuning)
    baseline: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The run's identity (config.json): every field but ``overwrite`` and ``verbose``."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("trace", "overwrite", "verbose")}
        return d | {"trace": self.trace.to_dict()}


@dataclass(frozen=True)
class TraceSummary(StageSummary):
    k: int
    P: int
    shared_size: int
    shared_fraction: float
    chance_fraction: float
    curve: dict[str, Any]
    top10pct_head_share: float
    head_gini: float
    top10pct_neuron_share: float | None
    attn_shared: float
    mlp_shared: float | None
    per_layer_module: dict[str, Any]
    gqa_attribution: str
    n_examples: dict[str, int]
    people: list[int]
    trace_s: float
    trace_processes: int
    top_heads: list[dict[str, Any]]
    curve_pretrained: dict[str, Any] | None = None
    shared_fraction_pretrained: float | None = None
    ablation: dict[str, dict[str, Any]] | None = None
    ablation_s: float | None = None
    ablation_note: str | None = None
    OPTIONAL = ("curve_pretrained", "shared_fraction_pretrained", "ablation", "ablation_s", "ablation_note")


def _start(cfg: TraceStageConfig, checkpoints: dict[str, str], rank: int, n_proc: int) -> Path | None:
    """The first process starts the run directory; under ``torchrun`` the others learn whether it could (they must
    not wait in the trace's all-reduce for a process that stopped)."""
    out, failed = None, None
    if rank == 0:
        try:
            out = start_run(cfg.out, cfg.to_dict(), overwrite=cfg.overwrite, checkpoints=checkpoints)
        except RecallCircuitsError as exc:
            failed = exc
    if n_proc > 1:
        ok = torch.tensor([failed is None], dtype=torch.int32, device=collective_device())
        torch.distributed.broadcast(ok, 0)
        if not ok.item() and rank != 0:
            raise RecallCircuitsError(f"the first process could not start the run directory {cfg.out}")
    if failed is not None:
        raise failed
    return out


def _traces(cfg: TraceStageConfig, pair: ModelPair, ds: Dataset) -> tuple[TraceResult, TraceResult | None, float]:
    """The fine-tuned model's trace, the pretrained model's (the baseline; every process takes part in both) and
    the seconds the first took."""
    t0 = time.time()
    res = cross_task_trace(pair.finetuned, ds, cfg.trace, base=pair.base, verbose=cfg.verbose)
    t_trace = time.time() - t0
    if cfg.baseline and cfg.trace.scale == "movement":
        log.info("no pretrained baseline: under scale='movement' the pretrained model's influence is zero")
        return res, None, t_trace
    return res, (cross_task_trace(pair.base, ds, cfg.trace, verbose=cfg.verbose) if cfg.baseline else None), t_trace


def _ablation(cfg: TraceStageConfig, pair: ModelPair, space: ParamSpace, ds: Dataset, res: TraceResult,
              S: torch.Tensor, given: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Restore S and its controls (the same count at random per tensor, one task's top entries, the ``given``
    masks)."""
    bio, qa = res.influence["bio"], res.influence["qa"]
    n = int(S.sum())
    masks = {**given, "shared": S,
             "bio_top": top_k_mask(bio, n), "qa_top": top_k_mask(qa, n),
             **{f"random{s}": random_like_mask(space, S, seed=s) for s in range(cfg.n_random)}}
    t1 = time.time()
    scores = restore_ablation(pair.finetuned, pair.base, space, ds, masks, batch_size=cfg.eval_batch_size,
                              max_people=cfg.max_eval_people).scores
    return {"ablation": scores, "ablation_s": time.time() - t1, "ablation_note": ABLATION_NOTE}


def _tensors(cfg: TraceStageConfig, res: TraceResult, S: torch.Tensor, top_bio: torch.Tensor,
             top_qa: torch.Tensor, stats: HeadStats) -> dict[str, torch.Tensor]:
    tensors = {"shared_idx": S.nonzero().squeeze(1), "bio_topk_idx": top_bio.nonzero().squeeze(1),
               "qa_topk_idx": top_qa.nonzero().squeeze(1), "shared_per_head": stats.per_head,
               **{f"shared_per_head_{c}": v for c, v in stats.per_component.items()}}
    if stats.per_neuron is not None:
        tensors["shared_per_neuron"] = stats.per_neuron
    if cfg.save_influence:
        tensors |= {"influence_bio": res.influence["bio"], "influence_qa": res.influence["qa"]}
    return tensors


def _run(cfg: TraceStageConfig) -> TraceSummary | None:
    rank, n_proc = world()
    checkpoints = {"base": str(resolve_model(cfg.base)), "finetuned": str(resolve_model(cfg.finetuned))}
    if (done := open_run(cfg.out, cfg.to_dict(), checkpoints, overwrite=cfg.overwrite)) is not None:
        return TraceSummary.from_dict(done) if rank == 0 else None
    ds = load_dataset(cfg.data)
    pair = load_pair(cfg.base, cfg.finetuned, device=cfg.device, dtype=cfg.dtype)
    space = ParamSpace(pair.finetuned, include=cfg.trace.include, biases=cfg.trace.biases)
    k = cfg.k if cfg.k is not None else max(1, round(cfg.k_frac * space.P))
    if not 1 <= k <= space.P:
        raise RecallCircuitsError(f"k = {k} is outside [1, P = {space.P}]")
    given = {f"file:{Path(p).name}": load_mask(p, space) for p in cfg.restore_masks}   # (before the trace)
    out = _start(cfg, checkpoints, rank, n_proc)
    res, pre, t_trace = _traces(cfg, pair, ds)
    if rank != 0 or out is None:
        return None
    bio, qa = res.influence["bio"], res.influence["qa"]
    ks = sorted(set(log_grid(space.P)) | {k})
    curve = shared_curve(bio, qa, ks)
    curve_pre = None if pre is None else shared_curve(pre.influence["bio"], pre.influence["qa"], ks)
    top_bio, top_qa = top_k_mask(bio, k), top_k_mask(qa, k)
    S = top_bio & top_qa
    stats = head_stats(space, S)
    extra: dict[str, Any] = {} if curve_pre is None else {
        "curve_pretrained": curve_pre.to_dict(), "shared_fraction_pretrained": curve_pre.shared_fraction[ks.index(k)]}
    if cfg.ablation:
        extra |= _ablation(cfg, pair, space, ds, res, S, given)
    summary = TraceSummary(
        k=k, P=space.P, shared_size=int(S.sum()), shared_fraction=int(S.sum()) / k, chance_fraction=k / space.P,
        curve=curve.to_dict(), top10pct_head_share=stats.top10pct_head_share, head_gini=stats.head_gini,
        top10pct_neuron_share=stats.top10pct_neuron_share, attn_shared=stats.attn_total, mlp_shared=stats.mlp_total,
        per_layer_module=stats.per_layer_module, gqa_attribution=stats.gqa_attribution, n_examples=res.n_examples,
        people=res.people, trace_s=t_trace, trace_processes=n_proc, top_heads=_top_heads(stats.per_head, 10),
        **extra)
    save_tensors(out, _tensors(cfg, res, S, top_bio, top_qa, stats))
    save_mask(str(out / SHARED_MASK_FILE), S)
    summary.save(out)
    curves = {Path(cfg.finetuned).name: curve, **({PRETRAINED_LABEL: curve_pre} if curve_pre is not None else {})}
    save_figure(out, shared_curve_figure(curves), "shared_curve")
    save_figure(out, head_heatmap(stats.per_head, f"Shared Size per head (k={k})", "shared entries"), "head_heatmap")
    log.info("shared fraction at k=%d: %.4f (pretrained %s, chance %.2e); top-10%% head share %.3f", k,
             summary.shared_fraction, summary.shared_fraction_pretrained, summary.chance_fraction,
             summary.top10pct_head_share)
    return summary


def _top_heads(per_head: torch.Tensor, n: int) -> list[dict[str, Any]]:
    flat = per_head.flatten()
    idx = flat.argsort(descending=True, stable=True)[:n]
    H = per_head.shape[1]
    return [{"head": head_label(int(i) // H, int(i) % H), "shared": float(flat[i])} for i in idx]


def run(cfg: TraceStageConfig) -> TraceSummary | None:
    """The run; under ``torchrun`` the processes share the trace's examples (each computes every world-th batch,
    the sums are all-reduced) and the first writes the run directory and runs the ablation alone. Returns the
    summary in the first process, None in the others."""
    # the processes leave together: the others wait (up to a day) while the first finishes the run alone
    with process_group(timeout=timedelta(hours=24)) as shared:
        summary = _run(cfg)
        if shared:
            torch.distributed.barrier()
        return summary
