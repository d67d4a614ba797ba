"""Head ablation by restoring pretrained weights (docs/paper.md §5).

Rank heads (by Shared Size from a gradient-trace run, by Grafted Size from a grafting run, at random), restore the
top-n heads of each ranking to their pretrained slices for n on a grid, and measure QA accuracy ID/OOD; and sweep
every head alone. A head's restore covers its Q and O slices and the K and V slices of its KV group (under GQA the
whole group, i.e. every query head sharing it: reported in the output), via in-place view swaps that are undone
exactly (:func:`recall_circuits.interventions.restore.restore_heads`); no model copies.

Example::

    curves = rc.head_curves(ft, base, dataset, {"shared": rc.ranking(shared_per_head)}, grid=[1, 2, 4, 8])
    curves.to_dataframe()                                  # ranking, n, metric, value
    sweep = rc.single_head_sweep(ft, base, dataset)        # every head alone
    sweep.drop("qa_ood_acc")                               # [n_layers, n_heads]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from recall_circuits.data.bios import Dataset, tokenize_qa
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.training.evaluation import score_targets
from recall_circuits.models.params import COMPONENTS, Component, head_label, n_kv_heads
from recall_circuits.models.loading import logits_from_layer, run_from_layer
from recall_circuits.interventions.restore import restore_heads
from recall_circuits.results import Result, head_rows

log = logging.getLogger(__name__)


def ranking(scores: Float[Tensor, "n_layers n_heads"]) -> list[tuple[int, int]]:
    """Heads sorted by score, descending (ties: lower layer, then lower head first)."""
    flat = scores.flatten()
    order = torch.argsort(-flat, stable=True)
    H = scores.shape[1]
    return [(int(i) // H, int(i) % H) for i in order]


def random_ranking(n_layers: int, n_heads: int, seed: int) -> list[tuple[int, int]]:
    g = torch.Generator().manual_seed(seed)
    return [(int(i) // n_heads, int(i) % n_heads) for i in torch.randperm(n_layers * n_heads, generator=g)]


class QAScorer:
    """Tokenises the QA questions once and scores a model on them (exact match / first token) in batches."""

    def __init__(self, model: Any, dataset: Dataset, max_people: int | None = None, batch_size: int = 32) -> None:
        self.model, self.batch_size = model, batch_size
        tok = model.tokenizer
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        self.split: dict[str, tuple[list[list[int]], list[list[int]]]] = {}
        for sp in ("id", "ood"):
            keep = set(dataset.person_ids(sp)[:max_people] if max_people else dataset.person_ids(sp))
            toks = [tokenize_qa(tok, e) for e in dataset.qa(sp) if e["person"] in keep]
            if not toks:
                raise RecallCircuitsError(f"no {sp} questions to score")
            self.split[sp] = ([t["input_ids"] for t in toks], [t["answer_pos"] for t in toks])

    def __call__(self) -> dict[str, float]:
        out = {}
        for sp, (seqs, tgts) in self.split.items():
            s = score_targets(self.model, seqs, tgts, self.pad, self.batch_size)
            out[f"qa_{sp}_acc"] = sum(x[0] for x in s) / len(s)
            out[f"qa_{sp}_first_token_acc"] = sum(x[1] for x in s) / len(s)
        return out


@dataclass(frozen=True, eq=False)
class HeadCurves(Result):
    """QA accuracy with the top-n heads of each ranking restored (:func:`head_curves`).

    ``curves[ranking]`` holds ``heads`` (the ranking's labels, best first) and ``points`` (one dict per n of
    ``grid``: ``n`` and the scores ``qa_{split}_acc`` / ``qa_{split}_first_token_acc``)."""

    grid: list[int]
    components: list[str]
    curves: dict[str, dict[str, Any]]
    gqa_note: str

    def to_dataframe(self) -> Any:
        """One row per (ranking, n, metric): columns ``ranking``, ``n``, ``metric``, ``value``."""
        import pandas as pd  # noqa: PLC0415

        return pd.DataFrame([{"ranking": name, "n": p["n"], "metric": k, "value": v}
                             for name, c in self.curves.items() for p in c["points"]
                             for k, v in p.items() if k != "n"])

    def to_dict(self) -> dict[str, Any]:
        return {"grid": list(self.grid), "components": list(self.components), "curves": self.curves,
                "gqa_note": self.gqa_note}


@dataclass(frozen=True, eq=False)
class SingleHeadSweep(Result):
    """Every head restored alone (:func:`single_head_sweep`): ``grids[metric]`` is ``[n_layers, n_heads]`` (NaN
    for layers not swept), ``baseline[metric]`` the fine-tuned model's score; metrics are ``qa_{split}_acc``,
    ``qa_{split}_first_token_acc`` and ``qa_{split}_answer_logprob``."""

    baseline: dict[str, float]
    grids: dict[str, Float[Tensor, "layer head"]]
    gqa_note: str
    n_questions: dict[str, int]

    def drop(self, metric: str = "qa_ood_acc") -> Float[Tensor, "layer head"]:
        """Baseline minus the score with each head restored: what each head's fine-tuning is worth."""
        return self.baseline[metric] - self.grids[metric]

    def to_dataframe(self) -> Any:
        """One row per (head, metric): ``layer``, ``head``, ``label``, ``metric``, ``value``, ``baseline``."""
        import pandas as pd  # noqa: PLC0415

        return pd.DataFrame([{**r, "baseline": self.baseline[k]} for k, g in self.grids.items()
                             for r in head_rows(g, metric=k)])


def head_curves(ft: Any, base: Any, dataset: Dataset, rankings: dict[str, list[tuple[int, int]]],
                grid: list[int], *, components: tuple[Component, ...] = COMPONENTS, max_people: int | None = None,
                batch_size: int = 32, verbose: bool = False) -> HeadCurves:
    """QA accuracy with the top-n heads of each ranking restored, for every n in ``grid``."""
    n_total = ft.cfg.n_layers * ft.cfg.n_heads
    if any(not 0 <= n <= n_total for n in grid):
        raise RecallCircuitsError(f"grid values must be in [0, {n_total}]")
    scorer = QAScorer(ft, dataset, max_people, batch_size)
    curves: dict[str, dict[str, Any]] = {}
    for name, order in tqdm(rankings.items(), disable=not verbose, desc="rankings"):
        rows = []
        for n in grid:
            with restore_heads(ft, base, order[:n], components):
                rows.append({"n": n, **scorer()})
        curves[name] = {"heads": [head_label(l, h) for l, h in order[: max(grid, default=0)]], "points": rows}
    return HeadCurves(list(grid), list(components), curves, gqa_note(ft))


class LayerwiseScorer:
    """QA exact match / first token of every head-restore variant, computed from the restored layer on.

    The questions are tokenised once into right-padded, length-sorted batches (causal: padding on the right never
    changes a real position, so no mask is needed). The fine-tuned residual stream before layer ``L`` is kept and
    advanced one block at a time; a variant that changes only layer ``L`` runs blocks ``L..`` from it, and only the
    rows at answer positions go through the unembedding.
    """

    def __init__(self, model: Any, dataset: Dataset, max_people: int | None = None, batch_size: int = 32) -> None:
        self.model = model
        base = QAScorer(model, dataset, max_people, batch_size)
        self.batches: list[dict[str, Any]] = []
        self.n = {sp: len(seqs) for sp, (seqs, _) in base.split.items()}
        items = [(sp, s, t) for sp, (seqs, tgts) in base.split.items() for s, t in zip(seqs, tgts, strict=True)]
        items.sort(key=lambda x: len(x[1]))
        device = next(model.parameters()).device
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            width = max(len(s) for _, s, _ in chunk)
            ids = torch.full((len(chunk), width), base.pad, dtype=torch.long)
            rows, cols, owner = [], [], []
            for r, (_, seq, tgt) in enumerate(chunk):
                ids[r, :len(seq)] = torch.tensor(seq)
                rows += [r] * len(tgt)
                cols += [p - 1 for p in tgt]
                owner.append(len(tgt))
            self.batches.append({"ids": ids.to(device), "rows": torch.tensor(rows, device=device),
                                 "cols": torch.tensor(cols, device=device),
                                 "targets": ids[rows, [c + 1 for c in cols]].to(device),
                                 "n_tgt": owner, "split": [sp for sp, _, _ in chunk]})
        self.layer = 0
        self.resid = [model(b["ids"], stop_at_layer=0) for b in self.batches]

    def advance(self) -> None:
        """Move the kept residual stream past block ``self.layer`` (fine-tuned weights as they are now)."""
        self.resid = [run_from_layer(self.model, r, self.layer, stop_at_layer=self.layer + 1) for r in self.resid]
        self.layer += 1

    def __call__(self) -> dict[str, float]:
        """Scores of the model as it is now, from the kept residual at ``self.layer``: exact match, first-token
        accuracy and the mean log-probability of the whole answer (teacher forced), per split."""
        exact = dict.fromkeys(self.n, 0)
        first = dict.fromkeys(self.n, 0)
        logp = dict.fromkeys(self.n, 0.0)
        for b, resid in zip(self.batches, self.resid, strict=True):
            logits = logits_from_layer(self.model, resid, self.layer,
                                       lambda x, b=b: x[b["rows"], b["cols"]]).float()
            ok = (logits.argmax(-1) == b["targets"]).cpu()
            lp = logits.log_softmax(-1).gather(1, b["targets"][:, None])[:, 0].double().cpu()
            for sp, part, lpp in zip(b["split"], ok.split(b["n_tgt"]), lp.split(b["n_tgt"]), strict=True):
                exact[sp] += int(part.all())
                first[sp] += int(part[0])
                logp[sp] += float(lpp.sum())
        out = {}
        for sp, n in self.n.items():
            out[f"qa_{sp}_acc"] = exact[sp] / n
            out[f"qa_{sp}_first_token_acc"] = first[sp] / n
            out[f"qa_{sp}_answer_logprob"] = logp[sp] / n
        return out


@torch.inference_mode()
def single_head_sweep(ft: Any, base: Any, dataset: Dataset, *, components: tuple[Component, ...] = COMPONENTS,
                      max_people: int | None = None, batch_size: int = 32, layers: list[int] | None = None,
                      verbose: bool = False) -> SingleHeadSweep:
    """QA accuracy with each head restored alone → tensors [n_layers, n_heads] per metric.

    ``base`` is the pretrained model or its :class:`~recall_circuits.models.params.HeadSlices` (attention weights only:
    the sweep then holds one model plus the slices). Each head is swapped in place and back, and its evaluation
    starts at its own layer from the kept fine-tuned residual stream (:class:`LayerwiseScorer`). ``layers``
    limits the sweep to some layers (the other rows of the grids are NaN).
    """
    L, H = ft.cfg.n_layers, ft.cfg.n_heads
    todo = sorted(set(range(L) if layers is None else layers))
    if not todo or todo[0] < 0 or todo[-1] >= L:
        raise RecallCircuitsError(f"layers must be a non-empty subset of [0, {L})")
    scorer = LayerwiseScorer(ft, dataset, max_people, batch_size)
    baseline = scorer()
    grids = {k: torch.full((L, H), float("nan")) for k in baseline}
    bar = tqdm(total=len(todo) * H, disable=not verbose, desc="single heads")
    for layer in range(todo[-1] + 1):
        for head in range(H) if layer in todo else ():
            with restore_heads(ft, base, [(layer, head)], components):
                r = scorer()
            for k, v in r.items():
                grids[k][layer, head] = v
            bar.update()
        if layer < todo[-1]:
            scorer.advance()
    bar.close()
    return SingleHeadSweep(baseline, grids, gqa_note(ft), dict(scorer.n))


def top_drops(drop: Tensor, n: int = 10) -> list[dict[str, Any]]:
    """The ``n`` heads with the largest drop (NaN rows, i.e. layers not swept, last)."""
    d = torch.nan_to_num(drop, nan=float("-inf"))
    return [{"head": head_label(l, h), "drop": float(drop[l, h])} for l, h in ranking(d)[:n]]


def gqa_note(model: Any) -> str:
    kv = n_kv_heads(model)
    if kv == model.cfg.n_heads:
        return "every query head has its own K/V: restoring a head restores Q, K, V, O of that head only"
    return (f"GQA: {model.cfg.n_heads} query heads share {kv} KV groups; restoring a query head restores its Q and O "
            f"and the K and V of its whole KV group (shared with {model.cfg.n_heads // kv - 1} other query heads)")


def _per_head_table(run_dir: str, key: str, model: Any, what: str) -> Tensor:
    from pathlib import Path  # noqa: PLC0415

    from recall_circuits.runs.artefacts import load_tensors  # noqa: PLC0415

    f = Path(run_dir) / "result.safetensors"
    if not f.is_file():
        raise RecallCircuitsError(f"{run_dir} is not a {what} run directory (no result.safetensors)")
    t = load_tensors(Path(run_dir))
    if key not in t:
        raise RecallCircuitsError(f"{run_dir} is not a {what} run directory (no {key})")
    shape = (model.cfg.n_layers, model.cfg.n_heads)
    if tuple(t[key].shape) != shape:
        raise RecallCircuitsError(f"{run_dir} was made for a model with {tuple(t[key].shape)} (layers, heads), "
                                  f"this one has {shape}")
    return t[key]


def run_head_ablation(base: str, finetuned: str, data: str, out: str, *, trace_dir: str | None = None,
                      graft_dir: str | None = None, patching_dir: str | None = None, n_random: int = 3,
                      grid: list[int] | None = None,
                      single: bool = True, components: tuple[Component, ...] = COMPONENTS,
                      max_people: int | None = None, batch_size: int = 32, overwrite: bool = False,
                      verbose: bool = True, device: str = "cpu", dtype: str = "float32") -> dict[str, Any]:
    """The run behind ``analyses/head_ablation.py``."""
    import plotly.graph_objects as go  # noqa: PLC0415

    from recall_circuits.runs.artefacts import (check_input_run, reuse_or_check, save_figure, save_summary,  # noqa
                                                save_tensors, start_run)
    from recall_circuits.data.bios import load_dataset  # noqa: PLC0415
    from recall_circuits.models.loading import load_pair  # noqa: PLC0415
    from recall_circuits.runs.viz import head_heatmap  # noqa: PLC0415

    from transformers import AutoConfig  # noqa: PLC0415

    from recall_circuits.models.registry import resolve_model  # noqa: PLC0415

    bad = [c for c in components if c not in COMPONENTS]
    if bad or not components:
        raise RecallCircuitsError(f"unknown components {bad}; choose from {list(COMPONENTS)}")
    if n_random < 0 or (max_people is not None and max_people < 1) or batch_size < 1:
        raise RecallCircuitsError("n_random must be >= 0, max_people and batch_size >= 1")
    hf_cfg = AutoConfig.from_pretrained(resolve_model(finetuned))
    n_heads_total = hf_cfg.num_hidden_layers * hf_cfg.num_attention_heads
    if grid is not None and any(not 0 <= n <= n_heads_total for n in grid):
        raise RecallCircuitsError(f"--grid values must be in [0, {n_heads_total}] (the model's heads), got {grid}")
    if grid is None:
        grid = sorted({0, *[n for n in (1, 2, 4, 8, 16, 32, 64) if n <= n_heads_total], max(1, n_heads_total // 10)})
    config = {"base": base, "finetuned": finetuned, "data": data, "trace_dir": trace_dir, "graft_dir": graft_dir,
              "patching_dir": patching_dir, "n_random": n_random, "grid": grid, "single": single,
              "components": list(components), "max_people": max_people}
    checkpoints = {"base": str(resolve_model(base)), "finetuned": str(resolve_model(finetuned))}
    if (done := reuse_or_check(out, config, overwrite=overwrite, checkpoints=checkpoints)) is not None:
        return done
    for d, what, theirs in ((trace_dir, "gradient-trace", checkpoints), (graft_dir, "grafting", checkpoints),
                            (patching_dir, "activation-patching", {"model": checkpoints["finetuned"]})):
        if d:
            check_input_run(d, what, theirs)
    ds = load_dataset(data)
    pair = load_pair(base, finetuned, device=device, dtype=dtype)
    ft, b = pair.finetuned, pair.base
    L, H = ft.cfg.n_layers, ft.cfg.n_heads
    rankings: dict[str, list[tuple[int, int]]] = {}
    tables: dict[str, Tensor] = {}
    if trace_dir:
        tables["shared_size"] = _per_head_table(trace_dir, "shared_per_head", ft, "gradient-trace")
        rankings["shared_size"] = ranking(tables["shared_size"])
    if graft_dir:
        tables["grafted_size"] = _per_head_table(graft_dir, "grafted_per_head", ft, "grafting")
        rankings["grafted_size"] = ranking(tables["grafted_size"])
    if patching_dir:
        tables["attribution"] = _per_head_table(patching_dir, "attribution_per_head", ft, "activation-patching")
        rankings["attribution"] = ranking(tables["attribution"])
    for s in range(n_random):
        rankings[f"random{s}"] = random_ranking(L, H, s)
    run = start_run(out, config, overwrite=overwrite, checkpoints=checkpoints)
    summary: dict[str, Any] = head_curves(ft, b, ds, rankings, grid, components=components, max_people=max_people,
                                          batch_size=batch_size, verbose=verbose).to_dict()
    tensors = {f"ranking_score_{k}": v for k, v in tables.items()}
    fig = go.Figure()
    for name, c in summary["curves"].items():
        fig.add_trace(go.Scatter(x=[p["n"] for p in c["points"]], y=[p["qa_ood_acc"] for p in c["points"]],
                                 mode="lines+markers", name=f"{name} (OOD)"))
        fig.add_trace(go.Scatter(x=[p["n"] for p in c["points"]], y=[p["qa_id_acc"] for p in c["points"]],
                                 mode="lines+markers", name=f"{name} (ID)", line={"dash": "dot"}))
    fig.update_layout(title="QA accuracy with the top-n heads of each ranking restored to pretrained weights",
                      xaxis_title="heads restored", yaxis_title="accuracy", yaxis_range=[0, 1])
    save_figure(run, fig, "head_curves")
    if single:
        sweep = single_head_sweep(ft, b, ds, components=components, max_people=max_people, batch_size=batch_size,
                                  verbose=verbose)
        summary["single_head_baseline"] = sweep.baseline
        for k, v in sweep.grids.items():
            tensors[f"single_{k}"] = v
        drop = sweep.drop("qa_ood_acc")
        summary["single_head_top_ood_drop"] = top_drops(drop)
        summary["single_head_top_id_logprob_drop"] = top_drops(sweep.drop("qa_id_answer_logprob"))
        save_figure(run, head_heatmap(drop, "QA-OOD accuracy lost when a single head is restored", "drop"),
                    "single_head")
    save_tensors(run, tensors)
    save_summary(run, summary)
    return summary
