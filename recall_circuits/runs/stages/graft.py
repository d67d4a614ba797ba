"""The grafting stage (``analyses/grafting.py``): learn the graft γ
(:func:`recall_circuits.interventions.grafting.graft`) and read it against the shared set of a gradient-trace run."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recall_circuits.artefacts import save_figure, save_tensors, start_run
from recall_circuits.attribution.shared import count_per_query_head
from recall_circuits.data.bios import load_dataset
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.files import GRAFT_MASK_FILE, SHARED_MASK_FILE
from recall_circuits.interventions.grafting import GraftConfig, graft, graft_report, graft_space, transfer_mask
from recall_circuits.interventions.restore import load_mask, save_mask
from recall_circuits.models.loading import load_pair
from recall_circuits.models.params import ParamSpace
from recall_circuits.models.registry import resolve_model
from recall_circuits.runs.stages.base import RunOptions, StageSummary, open_run
from recall_circuits.viz import head_heatmap

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GraftStageConfig(RunOptions):
    base: str
    finetuned: str
    data: str
    out: str
    graft: GraftConfig = field(default_factory=GraftConfig)
    trace_dir: str | None = None         # a gradient-trace run: the share of its shared set inside γ
    init_mask_file: str | None = None    # start from this mask instead of the top init_frac of |θ_ft − θ_pre|


@dataclass(frozen=True)
class GraftSummary(StageSummary):
    alpha: float
    graft_size: int
    P: int
    val_acc: float
    history: list[dict[str, Any]]
    grafted: dict[str, float]
    graft_attn_size: float
    shared_in_graft: int | None = None
    shared_share_of_graft: float | None = None
    grafted_without_shared: dict[str, float] | None = None
    acc_lost_without_shared: dict[str, float] | None = None
    OPTIONAL = ("shared_in_graft", "shared_share_of_graft", "grafted_without_shared", "acc_lost_without_shared")


def run(cfg: GraftStageConfig) -> GraftSummary:
    """Learn γ, report it against the shared set of ``cfg.trace_dir``."""
    config = {"base": cfg.base, "finetuned": cfg.finetuned, "data": cfg.data, "trace_dir": cfg.trace_dir,
              "init_mask": cfg.init_mask_file, "graft": cfg.graft.to_dict()}
    checkpoints = {"base": str(resolve_model(cfg.base)), "finetuned": str(resolve_model(cfg.finetuned))}
    if (done := open_run(cfg.out, config, checkpoints, overwrite=cfg.overwrite,
                         inputs=[(cfg.trace_dir, "gradient-trace", checkpoints)])) is not None:
        return GraftSummary.from_dict(done)
    ds = load_dataset(cfg.data)
    pair = load_pair(cfg.base, cfg.finetuned, device=cfg.device, dtype=cfg.dtype)
    attn_space = ParamSpace(pair.finetuned)
    shared = None
    if cfg.trace_dir is not None:
        f = Path(cfg.trace_dir) / SHARED_MASK_FILE
        if not f.is_file():
            raise RecallCircuitsError(f"{cfg.trace_dir} is not a gradient-trace run directory (no {f.name})")
        shared = load_mask(str(f), attn_space)
    space = graft_space(pair.finetuned)
    init = load_mask(cfg.init_mask_file, space) if cfg.init_mask_file else None
    out = start_run(cfg.out, config, overwrite=cfg.overwrite, checkpoints=checkpoints)
    res = graft(pair.finetuned, pair.base, ds, cfg.graft, init_mask=init, verbose=cfg.verbose)
    report = graft_report(pair.finetuned, pair.base, ds, res, shared, attn_space if shared is not None else None)
    per_head = count_per_query_head(attn_space, attn_space.unflatten(transfer_mask(res.mask, space, attn_space)),
                                               gqa="split")
    summary = GraftSummary(**report, graft_attn_size=float(per_head.sum()))
    save_mask(str(out / GRAFT_MASK_FILE), res.mask)
    save_tensors(out, {"graft_idx": res.mask.nonzero().squeeze(1), "grafted_per_head": per_head})
    summary.save(out)
    save_figure(out, head_heatmap(per_head, "Grafted Size per head", "grafted entries"), "graft_heatmap")
    log.info("alpha %.2e; grafted QA id %.3f ood %.3f", res.alpha, summary.grafted["qa_id_acc"],
             summary.grafted["qa_ood_acc"])
    return summary
