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
from recall_circuits.hints import Bridge
from recall_circuits.interventions.restore import restore_heads
from recall_circuits.models.loading import logits_from_layer, run_from_layer
from recall_circuits.models.params import COMPONENTS, Component, n_kv_heads
from recall_circuits.results import Result, head_label, head_rows
from recall_circuits.training.evaluation import score_targets

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

    def __init__(self, model: Bridge, dataset: Dataset, max_people: int | None = None, batch_size: int = 32) -> None:
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
        import pandas as pd  # noqa: PLC0415  (pandas loads only for a DataFrame)

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
        import pandas as pd  # noqa: PLC0415  (pandas loads only for a DataFrame)

        return pd.DataFrame([{**r, "baseline": self.baseline[k]} for k, g in self.grids.items()
                             for r in head_rows(g, metric=k)])


def head_curves(ft: Bridge, base: Bridge, dataset: Dataset, rankings: dict[str, list[tuple[int, int]]],
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

    def __init__(self, model: Bridge, dataset: Dataset, max_people: int | None = None, batch_size: int = 32) -> None:
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
def single_head_sweep(ft: Bridge, base: Bridge, dataset: Dataset, *, components: tuple[Component, ...] = COMPONENTS,
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


def gqa_note(model: Bridge) -> str:
    kv = n_kv_heads(model)
    if kv == model.cfg.n_heads:
        return "every query head has its own K/V: restoring a head restores Q, K, V, O of that head only"
    return (f"GQA: {model.cfg.n_heads} query heads share {kv} KV groups; restoring a query head restores its Q and O "
            f"and the K and V of its whole KV group (shared with {model.cfg.n_heads // kv - 1} other query heads)")
