"""The BIO-vs-QA attention stage (``analyses/attention_compare.py``): every model on the same aligned pairs
(:func:`recall_circuits.compare.attention.role_masses`), heads labelled by role, a circuitsvis page of the heads
most alike across formats."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from tqdm.auto import tqdm

from recall_circuits.artefacts import save_figure, save_tensors, start_run
from recall_circuits.attribution.trace import select_people
from recall_circuits.compare.attention import FORMATS, ROLES, RoleMasses, aligned_pairs, circuitsvis_page, role_masses
from recall_circuits.data.bios import load_dataset
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.files import FIGURES_DIR
from recall_circuits.models.loading import load_bridge
from recall_circuits.models.registry import resolve_model
from recall_circuits.results import head_label
from recall_circuits.runs.stages.base import RunOptions, StageSummary, open_run


@dataclass(frozen=True)
class AttentionConfig(RunOptions):
    models: dict[str, str]                 # name → registry name or checkpoint directory
    data: str
    out: str
    n_people: int = 10
    split: str = "ood"
    attributes: list[str] | None = None
    n_view_heads: int = 4
    threshold: float = 0.3


@dataclass(frozen=True)
class AttentionSummary(StageSummary):
    roles: list[str]
    people: list[int]
    models: dict[str, dict[str, Any]]      # per model: labels, counts by role, similarity, viewed heads, masses


def _model_summary(r: RoleMasses, n_view_heads: int) -> tuple[dict[str, Any], list[tuple[int, int]]]:
    sim = r.similarity
    H = sim.shape[1]
    focus = (r.mean[:, :, :, :2].sum(-1).min(0).values) * sim  # role-focused in both formats and alike
    top = [(int(i) // H, int(i) % H) for i in torch.argsort(-focus.flatten(), stable=True)[:n_view_heads]]
    return {"labels": r.labels, "n_subject_linking": sum(v == "subject linking" for v in r.labels.values()),
            "n_relation_focusing": sum(v == "relation focusing" for v in r.labels.values()),
            "mean_similarity": float(sim.mean()), "viewed_heads": [head_label(l, h) for l, h in top],
            "mean_mass": {f: {role: float(r.mean[i, ..., j].mean()) for j, role in enumerate(ROLES)}
                          for i, f in enumerate(FORMATS)}}, top


def _figure(name: str, r: RoleMasses) -> go.Figure:
    fig = make_subplots(rows=1, cols=3, subplot_titles=["subject mass (BIO)", "subject mass (QA)",
                                                        "BIO–QA profile similarity"])
    for c, z in enumerate((r.mean[0, ..., 0], r.mean[1, ..., 0], r.similarity), start=1):
        fig.add_trace(go.Heatmap(z=z.tolist(), coloraxis="coloraxis"), row=1, col=c)
    fig.update_layout(title=f"{name}: attention from the predicting position", coloraxis={"cmin": 0, "cmax": 1})
    fig.update_yaxes(autorange="reversed", title_text="layer")
    return fig


def run(cfg: AttentionConfig) -> AttentionSummary:
    """Every model, the same aligned pairs."""
    if not cfg.models:
        raise RecallCircuitsError("no models given (use --models NAME=PATH ...)")
    config = {"models": cfg.models, "data": cfg.data, "n_people": cfg.n_people, "split": cfg.split,
              "attributes": cfg.attributes, "threshold": cfg.threshold}
    checkpoints = {k: str(resolve_model(v)) for k, v in cfg.models.items()}
    if (done := open_run(cfg.out, config, checkpoints, overwrite=cfg.overwrite)) is not None:
        return AttentionSummary.from_dict(done)
    ds = load_dataset(cfg.data)
    people = select_people(ds, cfg.n_people, cfg.split, what="--people", where=f"the {cfg.split} split of {cfg.data}")
    bridges = {k: load_bridge(v, device=cfg.device, dtype=cfg.dtype) for k, v in cfg.models.items()}
    first = next(iter(bridges.values()))
    for k, b in bridges.items():
        if (b.cfg.n_layers, b.cfg.n_heads) != (first.cfg.n_layers, first.cfg.n_heads):
            raise RecallCircuitsError(f"model {k} has a different shape of heads")
    out = start_run(cfg.out, config, overwrite=cfg.overwrite, checkpoints=checkpoints)
    models: dict[str, dict[str, Any]] = {}
    tensors = {}
    for name, b in tqdm(bridges.items(), disable=not cfg.verbose, desc="models"):
        r = role_masses(b, ds, people, cfg.attributes, threshold=cfg.threshold)
        tensors[f"{name}.mean_masses"] = r.mean
        tensors[f"{name}.similarity"] = r.similarity
        models[name], top = _model_summary(r, cfg.n_view_heads)
        save_figure(out, _figure(name, r), f"roles_{name}")
        pair = aligned_pairs(b.tokenizer, ds, people[:1], cfg.attributes)[0]
        page = circuitsvis_page(b, pair, top, f"{name}: person {pair['person']}, {pair['attribute']}")
        (Path(out) / FIGURES_DIR / f"circuitsvis_{name}.html").write_text(page, encoding="utf-8")
    summary = AttentionSummary(roles=list(ROLES), people=people, models=models)
    save_tensors(out, tensors)
    summary.save(out)
    return summary
