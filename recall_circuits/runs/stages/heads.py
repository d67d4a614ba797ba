"""The head-ablation stage (``analyses/head_ablation.py``): rank heads by the Shared Size of a gradient-trace run,
the Grafted Size of a grafting run, the attribution of a patching run and at random; restore the top-n of each
ranking to pretrained weights (:func:`recall_circuits.interventions.head_ablation.head_curves`); sweep every head
alone."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from torch import Tensor
from transformers import AutoConfig

from recall_circuits.artefacts import load_tensors, save_figure, save_tensors, start_run
from recall_circuits.data.bios import load_dataset
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.files import TENSORS_FILE
from recall_circuits.interventions.head_ablation import (
    head_curves,
    random_ranking,
    ranking,
    single_head_sweep,
    top_drops,
)
from recall_circuits.models.loading import load_pair
from recall_circuits.models.params import COMPONENTS, Component
from recall_circuits.models.registry import resolve_model
from recall_circuits.runs.stages.base import RunOptions, StageSummary, open_run
from recall_circuits.viz import head_heatmap

# the input runs a ranking can come from: option, what the run is, the per-head table it holds, the ranking's name
_INPUTS = (("trace_dir", "gradient-trace", "shared_per_head", "shared_size"),
           ("graft_dir", "grafting", "grafted_per_head", "grafted_size"),
           ("patching_dir", "activation-patching", "attribution_per_head", "attribution"))


@dataclass(frozen=True)
class HeadsConfig(RunOptions):
    base: str
    finetuned: str
    data: str
    out: str
    trace_dir: str | None = None
    graft_dir: str | None = None
    patching_dir: str | None = None
    n_random: int = 3
    grid: list[int] | None = None          # None: 0, powers of two and a tenth of the heads
    single: bool = True
    components: tuple[Component, ...] = COMPONENTS
    max_people: int | None = None
    batch_size: int = 32

    def check(self, n_heads_total: int) -> list[int]:
        """The options' one-line errors; returns the grid to use."""
        bad = [c for c in self.components if c not in COMPONENTS]
        if bad or not self.components:
            raise RecallCircuitsError(f"unknown components {bad}; choose from {list(COMPONENTS)}")
        if self.n_random < 0 or (self.max_people is not None and self.max_people < 1) or self.batch_size < 1:
            raise RecallCircuitsError("n_random must be >= 0, max_people and batch_size >= 1")
        if self.grid is not None and any(not 0 <= n <= n_heads_total for n in self.grid):
            raise RecallCircuitsError(f"--grid values must be in [0, {n_heads_total}] (the model's heads), "
                                      f"got {self.grid}")
        if self.grid is not None:
            return list(self.grid)
        return sorted({0, *[n for n in (1, 2, 4, 8, 16, 32, 64) if n <= n_heads_total], max(1, n_heads_total // 10)})


@dataclass(frozen=True)
class HeadsSummary(StageSummary):
    grid: list[int]
    components: list[str]
    curves: dict[str, dict[str, Any]]       # ranking → heads (best first) and points (n, QA scores)
    gqa_note: str
    single_head_baseline: dict[str, float] | None = None
    single_head_top_ood_drop: list[dict[str, Any]] | None = None
    single_head_top_id_logprob_drop: list[dict[str, Any]] | None = None
    OPTIONAL = ("single_head_baseline", "single_head_top_ood_drop", "single_head_top_id_logprob_drop")


def per_head_table(run_dir: str, key: str, shape: tuple[int, int], what: str) -> Tensor:
    """The [layers, heads] table ``key`` of an input run directory, checked against the model's shape."""
    if not (Path(run_dir) / TENSORS_FILE).is_file():
        raise RecallCircuitsError(f"{run_dir} is not a {what} run directory (no {TENSORS_FILE})")
    t = load_tensors(Path(run_dir))
    if key not in t:
        raise RecallCircuitsError(f"{run_dir} is not a {what} run directory (no {key})")
    if tuple(t[key].shape) != shape:
        raise RecallCircuitsError(f"{run_dir} was made for a model with {tuple(t[key].shape)} (layers, heads), "
                                  f"this one has {shape}")
    return t[key]


def curves_figure(curves: dict[str, dict[str, Any]]) -> go.Figure:
    fig = go.Figure()
    for name, c in curves.items():
        fig.add_trace(go.Scatter(x=[p["n"] for p in c["points"]], y=[p["qa_ood_acc"] for p in c["points"]],
                                 mode="lines+markers", name=f"{name} (OOD)"))
        fig.add_trace(go.Scatter(x=[p["n"] for p in c["points"]], y=[p["qa_id_acc"] for p in c["points"]],
                                 mode="lines+markers", name=f"{name} (ID)", line={"dash": "dot"}))
    fig.update_layout(title="QA accuracy with the top-n heads of each ranking restored to pretrained weights",
                      xaxis_title="heads restored", yaxis_title="accuracy", yaxis_range=[0, 1])
    return fig


def run(cfg: HeadsConfig) -> HeadsSummary:
    hf_cfg = AutoConfig.from_pretrained(resolve_model(cfg.finetuned))
    grid = cfg.check(hf_cfg.num_hidden_layers * hf_cfg.num_attention_heads)
    config = {"base": cfg.base, "finetuned": cfg.finetuned, "data": cfg.data, "trace_dir": cfg.trace_dir,
              "graft_dir": cfg.graft_dir, "patching_dir": cfg.patching_dir, "n_random": cfg.n_random, "grid": grid,
              "single": cfg.single, "components": list(cfg.components), "max_people": cfg.max_people}
    checkpoints = {"base": str(resolve_model(cfg.base)), "finetuned": str(resolve_model(cfg.finetuned))}
    inputs = [(getattr(cfg, opt), what, checkpoints if opt != "patching_dir" else {"model": checkpoints["finetuned"]})
              for opt, what, _, _ in _INPUTS]
    if (done := open_run(cfg.out, config, checkpoints, overwrite=cfg.overwrite, inputs=inputs)) is not None:
        return HeadsSummary.from_dict(done)
    ds = load_dataset(cfg.data)
    pair = load_pair(cfg.base, cfg.finetuned, device=cfg.device, dtype=cfg.dtype)
    ft, b = pair.finetuned, pair.base
    L, H = ft.cfg.n_layers, ft.cfg.n_heads
    tables = {name: per_head_table(getattr(cfg, opt), key, (L, H), what)
              for opt, what, key, name in _INPUTS if getattr(cfg, opt)}
    rankings = {name: ranking(t) for name, t in tables.items()}
    rankings |= {f"random{s}": random_ranking(L, H, s) for s in range(cfg.n_random)}
    out = start_run(cfg.out, config, overwrite=cfg.overwrite, checkpoints=checkpoints)
    curves = head_curves(ft, b, ds, rankings, grid, components=cfg.components, max_people=cfg.max_people,
                         batch_size=cfg.batch_size, verbose=cfg.verbose)
    summary = HeadsSummary(grid=list(curves.grid), components=list(curves.components), curves=curves.curves,
                           gqa_note=curves.gqa_note)
    tensors = {f"ranking_score_{k}": v for k, v in tables.items()}
    save_figure(out, curves_figure(summary.curves), "head_curves")
    if cfg.single:
        sweep = single_head_sweep(ft, b, ds, components=cfg.components, max_people=cfg.max_people,
                                  batch_size=cfg.batch_size, verbose=cfg.verbose)
        drop = sweep.drop("qa_ood_acc")
        summary = dataclasses.replace(summary, single_head_baseline=sweep.baseline,
                                      single_head_top_ood_drop=top_drops(drop),
                                      single_head_top_id_logprob_drop=top_drops(sweep.drop("qa_id_answer_logprob")))
        tensors |= {f"single_{k}": v for k, v in sweep.grids.items()}
        save_figure(out, head_heatmap(drop, "QA-OOD accuracy lost when a single head is restored", "drop"),
                    "single_head")
    save_tensors(out, tensors)
    summary.save(out)
    return summary
