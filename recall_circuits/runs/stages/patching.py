"""The activation-patching stage (``analyses/activation_patching.py``): for QA pairs of two people, exact patching
per head × position and per residual position, attribution patching, and BIO → QA patching by role
(:mod:`recall_circuits.interventions.patching`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from recall_circuits.artefacts import save_figure, save_tensors, start_run
from recall_circuits.data.bios import load_dataset
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.interventions.patching import (
    attribution_patch_heads,
    cross_format_patch,
    logit_diff_metric,
    patch_heads_by_pos,
    patch_resid_by_pos,
    qa_patching_pairs,
)
from recall_circuits.models.loading import load_bridge, load_tokenizer
from recall_circuits.models.registry import resolve_model
from recall_circuits.runs.stages.base import RunOptions, StageSummary, open_run
from recall_circuits.viz import head_heatmap

NOTE = ("grids are logit differences (clean answer − corrupted answer, first tokens) of the corrupted QA run with one "
        "activation patched; cross-format patches the clean person's BIO residual stream into the corrupted QA run at "
        "role-aligned positions")


@dataclass(frozen=True)
class PatchingConfig(RunOptions):
    model_path: str
    data: str
    out: str
    n_pairs: int = 4
    split: str = "ood"


@dataclass(frozen=True)
class PatchingSummary(StageSummary):
    pairs: list[dict[str, Any]]                    # attribute and the two people of each pair
    corrupted_metric: list[float]
    clean_metric: list[float]
    roles: list[str]
    cross_format_by_layer_role: list[list[float]]
    attribution_vs_exact_corr: float
    note: str


def _metric(p: dict[str, Any]) -> Any:
    return logit_diff_metric(torch.tensor([p["correct"]]), torch.tensor([p["wrong"]]))


def run(cfg: PatchingConfig) -> PatchingSummary:
    if cfg.n_pairs < 1:
        raise RecallCircuitsError(f"--pairs must be >= 1, got {cfg.n_pairs}")
    config = {"model": cfg.model_path, "data": cfg.data, "n_pairs": cfg.n_pairs, "split": cfg.split}
    checkpoints = {"model": str(resolve_model(cfg.model_path))}
    if (done := open_run(cfg.out, config, checkpoints, overwrite=cfg.overwrite)) is not None:
        return PatchingSummary.from_dict(done)
    ds = load_dataset(cfg.data)
    pairs = qa_patching_pairs(load_tokenizer(cfg.model_path), ds, cfg.n_pairs, cfg.split, what="--pairs")
    model = load_bridge(cfg.model_path, device=cfg.device, dtype=cfg.dtype)
    out = start_run(cfg.out, config, overwrite=cfg.overwrite, checkpoints=checkpoints)
    heads, resid, attr, cross = [], [], [], []
    for p in tqdm(pairs, disable=not cfg.verbose, desc="pairs"):
        clean, corr, metric = torch.tensor([p["clean"]]), torch.tensor([p["corrupted"]]), _metric(p)
        heads.append(patch_heads_by_pos(model, clean, corr, metric))
        resid.append(patch_resid_by_pos(model, clean, corr, metric))
        attr.append(attribution_patch_heads(model, clean, corr, metric))
        cross.append(cross_format_patch(model, torch.tensor([p["bio"]]), corr, p["roles"], metric))
    with torch.inference_mode():
        base = [float(_metric(p)(model(torch.tensor([p["corrupted"]]))[:, -1])) for p in pairs]
        clean_v = [float(_metric(p)(model(torch.tensor([p["clean"]]))[:, -1])) for p in pairs]
    head_all_pos = torch.stack([h.sum(1) - (h.shape[1] - 1) * b for h, b in zip(heads, base)]).mean(0)
    cross_m = torch.stack(cross).mean(0)
    # pairs may differ in length: compare attribution with exact patching cell by cell, over all pairs
    exact_eff = torch.cat([(h - b).flatten() for h, b in zip(heads, base, strict=True)])
    attr_f = torch.cat([a.flatten() for a in attr])
    summary = PatchingSummary(
        pairs=[{k: p[k] for k in ("attribute", "people")} for p in pairs], corrupted_metric=base,
        clean_metric=clean_v, roles=list(pairs[0]["roles"]), cross_format_by_layer_role=cross_m.tolist(),
        attribution_vs_exact_corr=float(torch.corrcoef(torch.stack([attr_f, exact_eff]))[0, 1]), note=NOTE)
    save_tensors(out, {**{f"heads_by_pos.{i}": h for i, h in enumerate(heads)},
                       **{f"resid_by_pos.{i}": r for i, r in enumerate(resid)},
                       **{f"attribution.{i}": a for i, a in enumerate(attr)},
                       "cross_format": torch.stack(cross), "head_effect_summed_over_pos": head_all_pos,
                       "attribution_per_head": torch.stack([a.abs().sum(1) for a in attr]).mean(0)})
    summary.save(out)
    save_figure(out, head_heatmap(head_all_pos, "Per-head effect (summed over positions)", "Δ logit diff"), "heads")
    save_figure(out, head_heatmap(cross_m, "BIO→QA patching by layer (x: role)", "logit diff"), "cross_format")
    return summary
