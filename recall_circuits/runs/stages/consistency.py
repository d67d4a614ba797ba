"""The consistency stage (``analyses/consistency.py``): gradient and representation consistency between BIO and QA,
the cross-format probe and the input signature for every model on the same people
(:mod:`recall_circuits.compare.consistency`); with ``along``, the gradient cosine along each run's snapshots."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
from tqdm.auto import tqdm

from recall_circuits.artefacts import save_figure, start_run
from recall_circuits.attribution.trace import select_people
from recall_circuits.compare.consistency import (
    gradient_consistency,
    gradient_consistency_along,
    input_signature,
    representation_consistency,
)
from recall_circuits.data.bios import Dataset, load_dataset
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.hints import Bridge
from recall_circuits.models.loading import load_bridge
from recall_circuits.models.registry import resolve_model
from recall_circuits.runs.stages.base import RunOptions, StageSummary, open_run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConsistencyConfig(RunOptions):
    models: dict[str, str]
    data: str
    out: str
    n_people: int = 10
    split: str = "ood"
    along: dict[str, str] | None = None     # name → training run directory: the cosine along its snapshots


@dataclass(frozen=True)
class ConsistencySummary(StageSummary):
    people: list[int]
    models: dict[str, dict[str, Any]]       # per model: the three measures and the probe
    along: dict[str, list[dict[str, Any]]] | None = None   # per run: step, gradient_cosine
    OPTIONAL = ("along",)


def _measure(b: Bridge, ds: Dataset, people: list[int], name: str) -> dict[str, Any]:
    log.info("%s: gradient consistency (%d people)", name, len(people))
    g = gradient_consistency(b, ds, people)
    log.info("%s: representation consistency and probe", name)
    r = representation_consistency(b, ds, people)
    log.info("%s: input signature", name)
    s = input_signature(b, ds, people)
    return {"gradient_cosine": g.overall, "gradient_cosine_per_module": g.per_module,
            "representation_cosine": r.cosine, "representation_cka": r.cka, "retrieval_acc": r.retrieval_acc,
            "chance_retrieval": r.chance_retrieval, "mean_representation_cosine": sum(r.cosine) / len(r.cosine),
            "subject_relation_share": s.subject_relation_share, "n_pairs": g.n_pairs, "probe": r.probe}


def _figures(models: dict[str, dict[str, Any]]) -> dict[str, go.Figure]:
    rep = go.Figure()
    for name, m in models.items():
        rep.add_trace(go.Scatter(y=m["representation_cosine"], mode="lines+markers", name=f"{name}: cosine"))
        rep.add_trace(go.Scatter(y=m["representation_cka"], mode="lines", name=f"{name}: CKA", line={"dash": "dot"}))
    rep.update_layout(title="BIO vs QA representation consistency by layer (predicting positions)",
                      xaxis_title="layer", yaxis_title="similarity")
    probe = go.Figure()
    for name, m in models.items():
        probe.add_trace(go.Scatter(y=m["probe"]["bio_to_qa"], mode="lines+markers", name=f"{name}: BIO→QA"))
        probe.add_trace(go.Scatter(y=m["probe"]["qa_to_bio"], mode="lines", name=f"{name}: QA→BIO",
                                   line={"dash": "dot"}))
    probe.update_layout(title="Linear probe for the value's first token, trained on one format, tested on the "
                              "other", xaxis_title="layer", yaxis_title="accuracy", yaxis_range=[0, 1])
    return {"representation_consistency": rep, "probe": probe}


def _along_figure(along: dict[str, list[dict[str, Any]]]) -> go.Figure:
    fig = go.Figure([go.Scatter(x=[p["step"] for p in pts], y=[p["gradient_cosine"] for p in pts],
                                mode="lines+markers", name=name) for name, pts in along.items()])
    fig.update_layout(title="Gradient consistency (cos ∇L_BIO, ∇L_QA) along training", xaxis_title="step",
                      yaxis_title="mean cosine")
    return fig


def run(cfg: ConsistencyConfig) -> ConsistencySummary:
    """The three measures for every model, on the same people; with ``along`` also along training."""
    if not cfg.models:
        raise RecallCircuitsError("no models given (use --models NAME=PATH ...)")
    config = {"models": cfg.models, "data": cfg.data, "n_people": cfg.n_people, "split": cfg.split,
              "along": cfg.along}
    checkpoints = {k: str(resolve_model(v)) for k, v in cfg.models.items()}
    if (done := open_run(cfg.out, config, checkpoints, overwrite=cfg.overwrite)) is not None:
        return ConsistencySummary.from_dict(done)
    ds = load_dataset(cfg.data)
    people = select_people(ds, cfg.n_people, cfg.split, what="--people", where=f"the {cfg.split} split of {cfg.data}")
    bridges = {k: load_bridge(v, device=cfg.device, dtype=cfg.dtype) for k, v in cfg.models.items()}
    out = start_run(cfg.out, config, overwrite=cfg.overwrite, checkpoints=checkpoints)
    models = {name: _measure(b, ds, people, name)
              for name, b in tqdm(bridges.items(), disable=not cfg.verbose, desc="models")}
    for name, fig in _figures(models).items():
        save_figure(out, fig, name)
    along = None
    if cfg.along:
        # a run's final model is usually one of the models measured above: its cosine is not measured again
        known = {str(resolve_model(v)): models[k]["gradient_cosine"] for k, v in cfg.models.items()}
        along = {name: gradient_consistency_along(d, ds, people, device=cfg.device, dtype=cfg.dtype,
                                                  known=known).to_points() for name, d in cfg.along.items()}
        save_figure(out, _along_figure(along), "gradient_consistency_along")
    summary = ConsistencySummary(people=people, models=models, along=along)
    summary.save(out)
    return summary
