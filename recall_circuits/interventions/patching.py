"""Activation patching, fast and across formats (docs/paper.md §5; TransformerLens ``patching`` semantics).

- :func:`patch_heads_by_pos`: clean ``hook_z`` of one (layer, position, head) written into the corrupted run;
  the metric of every cell → ``[n_layers, pos, n_heads]``, the same grid as
  ``transformer_lens.patching.get_act_patch_attn_head_out_by_pos``. Fast: the cells of a layer are stacked along
  the batch axis, each patched run starts at the patched layer from the cached corrupted residual
  (``start_at_layer``), and only the last position's logits are computed, for all cells together at the end; no
  per-cell host syncs. A patch at position p leaves every earlier position as in the corrupted run (causal
  attention), so a batch of cells whose positions start at p0 runs positions p0.. only, attending to the corrupted
  run's keys and values of positions before p0 (the model's own key/value cache, sliced): about half the
  positions on average.
- :func:`patch_resid_by_pos`: the same for ``resid_pre`` / ``attn_out`` / ``mlp_out`` → ``[n_layers, pos]``.
- :func:`cross_format_patch`: BIO activations written into the QA run at role-aligned positions (the two prompts
  differ in length, so positions are paired by role) → ``[n_layers, n_roles]``.
- :func:`attribution_patch_heads`: the linear estimate (∂metric/∂z at the corrupted run) · (z_clean − z_corr),
  two forwards and one backward → ``[n_layers, pos, n_heads]``.

A metric maps last-position logits ``[n, d_vocab]`` of n prompts to ``[n]``; grids hold its mean over prompts.

Example::

    grid = rc.patch_heads_by_pos(model, clean, corrupted, rc.logit_diff_metric(correct_ids, wrong_ids))
    rc.patching_sweep(model, rc.qa_patching_pairs(model.tokenizer, dataset, 1)[0]).to_dataframe()
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformers import DynamicCache

from recall_circuits import checks
from recall_circuits.data.bios import tokenize_bio, tokenize_qa
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.hints import Bridge, Tokenizer
from recall_circuits.models.loading import (
    forget_graph,
    hf_config,
    kv_cache_kwargs,
    logits_from_layer,
    normed_from_layer,
    tile_cache,
)
from recall_circuits.results import Result, head_label

log = logging.getLogger(__name__)

Metric = Callable[[Tensor], Tensor]


def logit_diff_metric(correct: Int[Tensor, " n"], wrong: Int[Tensor, " n"]) -> Metric:
    """logit[correct] − logit[wrong] at the last position, per prompt."""
    def metric(logits: Tensor) -> Tensor:
        return logits.gather(1, correct[:, None].to(logits.device))[:, 0] - \
            logits.gather(1, wrong[:, None].to(logits.device))[:, 0]
    return metric


def answer_prob_metric(correct: Int[Tensor, " n"]) -> Metric:
    """Probability of the correct first answer token at the last position, per prompt."""
    def metric(logits: Tensor) -> Tensor:
        return logits.float().softmax(-1).gather(1, correct[:, None].to(logits.device))[:, 0]
    return metric


def _last_logits(model: Bridge, resid: Tensor, layer: int, fwd_hooks: list[tuple[str, Any]]) -> Tensor:
    """Run from ``layer`` on ``resid`` with hooks; return the logits of the last position only."""
    return logits_from_layer(model, resid, layer, lambda x: x[:, -1], fwd_hooks)


def _last_normed(model: Bridge, resid: Tensor, layer: int, fwd_hooks: list[tuple[str, Any]],
                 prefix: dict[str, Any] | None = None) -> Tensor:
    """Run from ``layer`` on ``resid`` with hooks (after a key/value prefix, passed as ``prefix``'s keyword
    arguments, if any); return the last position's final-norm output (the unembedding is left to
    :func:`_metric_of_normed`, which runs it once over many cells)."""
    return normed_from_layer(model, resid, layer, lambda x: x[:, -1], fwd_hooks, **(prefix or {}))


def _metric_of_normed(model: Bridge, rows: Tensor, metric: Metric, B: int, block_cells: int = 256) -> Tensor:
    """Final-norm rows of n cells × B prompts → the metric's mean over prompts per cell ``[n]``. The unembedding
    runs over ``block_cells`` cells at a time: at a few rows per call it is bound by reading the unembedding matrix
    (for a 49k vocabulary, over 100 MB per call)."""
    n = rows.shape[0] // B
    return torch.cat([metric_batched(metric, model.unembed(rows[s * B:min(n, s + block_cells) * B]),
                                     min(n, s + block_cells) - s, B) for s in range(0, n, block_cells)])


def _position_chunks(cells: list[tuple[int, int]], cells_per_batch: int) -> list[list[tuple[int, int]]]:
    """(position, index) cells, sorted by position, cut into batches of whole positions (as many as fit in
    ``cells_per_batch``; a position with more cells than that is split)."""
    if cells_per_batch < 1:
        raise RecallCircuitsError(f"cells_per_batch must be >= 1, got {cells_per_batch}")
    groups: dict[int, list[tuple[int, int]]] = {}
    for c in sorted(cells):
        groups.setdefault(c[0], []).append(c)
    out: list[list[tuple[int, int]]] = []
    cur: list[tuple[int, int]] = []
    for g in groups.values():
        if cur and len(cur) + len(g) > cells_per_batch:
            out.append(cur)
            cur = []
        for j in range(0, len(g), cells_per_batch):
            part = g[j:j + cells_per_batch]
            if len(part) == cells_per_batch:
                out.append(part)
            else:
                cur += part
    return [*out, cur] if cur else out


def _check(model: Bridge, clean: Tensor, corrupted: Tensor) -> None:
    if clean.shape != corrupted.shape or clean.ndim != 2:
        raise RecallCircuitsError(f"clean and corrupted tokens must have the same [batch, pos] shape, got "
                                  f"{tuple(clean.shape)} and {tuple(corrupted.shape)}")
    if model.training:
        raise RecallCircuitsError("activation patching needs the model in eval mode")


def _sweep(model: Bridge, clean: Tensor, corrupted: Tensor, metric: Metric, names: list[str], per_pos: int, *,
           cells_per_batch: int, skip_positions: bool, skip_identical: bool) -> Tensor:
    """The engine of :func:`patch_heads_by_pos` and :func:`patch_resid_by_pos`: ``names[layer]`` is the patched hook,
    its activation seen as ``[batch, pos, per_pos, ...]`` (``per_pos`` = heads for ``hook_z``, 1 for a
    residual-stream hook); one cell is a (layer, position, index) → ``[n_layers, pos, per_pos]``."""
    L = model.cfg.n_layers
    B, T = clean.shape
    r_names = [f"blocks.{layer}.hook_resid_pre" for layer in range(L)]
    _, clean_cache = model.run_with_cache(clean, names_filter=names)
    corr_names = sorted({*r_names, *names})
    kv_names = kv_cache_kwargs(model) if skip_positions else None
    if skip_positions and kv_names is None:
        log.info("this model and transformers version give no usable key/value cache: patching runs every "
                 "position (exact, slower)")
        skip_positions = False
    if skip_positions:   # the corrupted run's own key/value cache comes with it
        assert kv_names is not None
        (corr_logits, kv), corr_cache = model.run_with_cache(  # type: ignore[call-overload]  # cache kwargs
            corrupted, names_filter=corr_names, return_type="logits_and_cache",
            **dict.fromkeys(kv_names, DynamicCache(config=hf_config(model))))
    else:
        corr_logits, corr_cache = model.run_with_cache(corrupted, names_filter=corr_names)
        kv = None
    if kv is not None and any(lay.keys.shape[-2] < T for lay in kv.layers):
        # a layer kept fewer positions than the prompt (a sliding window shorter than it): a prefix cut from its
        # cache would not start at position 0, so every position is run (exact)
        log.info("a layer's key/value cache keeps only %d of the prompt's %d positions (sliding window): patching "
                 "runs every position", min(lay.keys.shape[-2] for lay in kv.layers), T)
        skip_positions, kv = False, None
    out = torch.empty(L, T, per_pos)
    out[:] = metric_batched(metric, corr_logits[:, -1], 1, B)[0]
    rows, cells = [], []
    for layer in range(L):
        src = clean_cache[names[layer]].reshape(B, T, per_pos, -1)
        resid = corr_cache[r_names[layer]]                     # [B, T, d_model]
        same = (src == corr_cache[names[layer]].reshape(B, T, per_pos, -1)).all(0).all(-1).cpu() if skip_identical \
            else torch.zeros(T, per_pos, dtype=torch.bool)
        todo = [(p, i) for p in range(T) for i in range(per_pos) if not same[p, i]]
        for chunk in _position_chunks(todo, cells_per_batch):
            C = len(chunk)
            p0 = min(p for p, _ in chunk) if skip_positions else 0
            pos = torch.tensor([p for p, _ in chunk], device=src.device)
            idx = torch.tensor([i for _, i in chunk], device=src.device)

            def hook(act: Tensor, hook: Any, pos: Tensor = pos, idx: Tensor = idx, C: int = C, p0: int = p0,
                     src: Tensor = src) -> Tensor:
                act = act.clone()
                act.view(C, B, act.shape[1], per_pos, -1)[torch.arange(C), :, pos - p0, idx] = \
                    src[:, pos, idx].transpose(0, 1)           # [C, B, ...]
                return act

            prefix = dict.fromkeys(kv_names or (), tile_cache(model, kv, C, upto=p0)) if p0 else {}
            rows.append(_last_normed(model, resid[:, p0:].repeat(C, 1, 1), layer, [(names[layer], hook)], prefix))
            cells += [(layer, p, i) for p, i in chunk]
    if cells:
        at = torch.tensor(cells)
        out[at[:, 0], at[:, 1], at[:, 2]] = _metric_of_normed(model, torch.cat(rows), metric, B)
    return out


@torch.inference_mode()
def patch_heads_by_pos(model: Bridge, clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "..."],
                       metric: Metric, *, cells_per_batch: int = 36, skip_positions: bool = True,
                       skip_identical: bool = True) -> Float[Tensor, "n_layers pos n_heads"]:
    """Exact per-(layer, pos, head) patching of clean ``hook_z`` into the corrupted run.

    ``cells_per_batch`` cells run stacked along the batch axis, cut at whole positions; with ``skip_positions``
    each batch runs from its first position on after the corrupted run's cached keys and values (see the module
    docstring); ``False`` runs every position (any model the bridge can start at a layer). With
    ``skip_identical`` a cell whose clean and corrupted ``z`` are bitwise identical for every prompt (in a
    same-template pair: every position before the first token where the prompts differ) is not run: writing a
    value over itself leaves the corrupted run unchanged, so the cell's value is the corrupted run's metric."""
    _check(model, clean, corrupted)
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(model.cfg.n_layers)]
    return _sweep(model, clean, corrupted, metric, names, model.cfg.n_heads, cells_per_batch=cells_per_batch,
                  skip_positions=skip_positions, skip_identical=skip_identical)


def metric_batched(metric: Metric, logits: Tensor, C: int, B: int) -> Tensor:
    """Apply a per-prompt metric to C stacked copies of B prompts; mean over prompts → [C]."""
    return metric_rows(metric, logits, B).view(C, B).float().mean(1).cpu()


def metric_rows(metric: Metric, logits: Tensor, B: int) -> Tensor:
    """The metric expects B prompts: call it once per copy-block so per-prompt arguments line up."""
    n = logits.shape[0] // B
    return torch.cat([metric(logits[i * B:(i + 1) * B]) for i in range(n)])


@torch.inference_mode()
def patch_resid_by_pos(model: Bridge, clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "..."],
                       metric: Metric, component: str = "resid_pre", *, cells_per_batch: int = 8,
                       skip_positions: bool = True, skip_identical: bool = True) -> Float[Tensor, "n_layers pos"]:
    """Exact per-(layer, pos) patching of ``resid_pre``, ``attn_out`` or ``mlp_out`` (batching, ``skip_positions``
    and ``skip_identical`` as in :func:`patch_heads_by_pos`)."""
    _check(model, clean, corrupted)
    if component not in ("resid_pre", "attn_out", "mlp_out"):
        raise RecallCircuitsError(f"unknown component {component!r}")
    names = [f"blocks.{layer}.hook_{component}" for layer in range(model.cfg.n_layers)]
    return _sweep(model, clean, corrupted, metric, names, 1, cells_per_batch=cells_per_batch,
                  skip_positions=skip_positions, skip_identical=skip_identical)[..., 0]


@torch.inference_mode()
def cross_format_patch(model: Bridge, source: Int[Tensor, "1 src_pos"], target: Int[Tensor, "1 tgt_pos"],
                       pairs: dict[str, tuple[int, int]], metric: Metric, component: str = "resid_pre"
                       ) -> Float[Tensor, "n_layers n_roles"]:
    """Write the source run's ``component`` at source position → target position (one pair per role, e.g.
    ``{"subject": (bio_pos, qa_pos), "predict": (bio_pos, qa_pos)}``) into the target run, layer by layer."""
    if not pairs:
        raise RecallCircuitsError("no role-aligned positions to patch")
    for role, (sp, tp) in pairs.items():
        if not (0 <= sp < source.shape[1] and 0 <= tp < target.shape[1]):
            raise RecallCircuitsError(f"role {role}: positions {(sp, tp)} outside the prompts")
    L = model.cfg.n_layers
    names = [f"blocks.{layer}.hook_{component}" for layer in range(L)]
    r_names = [f"blocks.{layer}.hook_resid_pre" for layer in range(L)]
    _, src_cache = model.run_with_cache(source, names_filter=names)
    _, tgt_cache = model.run_with_cache(target, names_filter=r_names)
    roles = list(pairs)
    R = len(roles)
    out = torch.empty(L, R)
    for layer in range(L):
        src_pos = torch.tensor([pairs[r][0] for r in roles])
        tgt_pos = torch.tensor([pairs[r][1] for r in roles])
        src = src_cache[names[layer]][0]

        def hook(act: Tensor, hook: Any, sp: Tensor = src_pos, tp: Tensor = tgt_pos, src: Tensor = src) -> Tensor:
            act = act.clone()
            act[torch.arange(R), tp] = src[sp]
            return act

        logits = _last_logits(model, tgt_cache[r_names[layer]].repeat(R, 1, 1), layer, [(names[layer], hook)])
        out[layer] = metric_batched(metric, logits, R, 1)
    return out


def attribution_patch_heads(model: Bridge, clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "..."],
                            metric: Metric) -> Float[Tensor, "n_layers pos n_heads"]:
    """Attribution patching: (∂ mean metric / ∂ z)|corrupted · (z_clean − z_corrupted), summed over d_head."""
    _check(model, clean, corrupted)
    L = model.cfg.n_layers
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(L)]
    with torch.inference_mode():
        _, clean_cache = model.run_with_cache(clean, names_filter=names)
    acts: dict[str, Tensor] = {}

    def keeper(name: str) -> Callable[..., Tensor]:
        def keep(z: Tensor, hook: Any) -> Tensor:
            z = z.detach().requires_grad_(True)
            acts[name] = z
            return z
        return keep

    try:
        with torch.enable_grad(), model.hooks(fwd_hooks=[(n, keeper(n)) for n in names]):
            logits = model(corrupted)
            value = metric(logits[:, -1]).float().mean()
            grads = torch.autograd.grad(value, [acts[n] for n in names])
    finally:
        forget_graph(model)
    return torch.stack([((clean_cache[n] - acts[n].detach()) * g).sum(-1).mean(0) for n, g in zip(names, grads)])


def grid_to_dataframe(grid: Tensor, axes: tuple[str, ...]) -> Any:
    """A patching grid as a long pandas DataFrame with one column per axis and ``value``."""
    import pandas as pd  # noqa: PLC0415  (pandas loads only for a DataFrame)

    idx = torch.cartesian_prod(*[torch.arange(n) for n in grid.shape]) if grid.ndim > 1 else \
        torch.arange(grid.shape[0])[:, None]
    return pd.DataFrame({**{a: idx[:, i].numpy() for i, a in enumerate(axes)},
                         "value": grid.flatten().float().numpy()})


@dataclass(frozen=True, eq=False)
class PatchingResult(Result):
    """One patching sweep of a (clean, corrupted) pair (:func:`patching_sweep`): ``values`` over ``axes``
    (``("layer", "pos", "head")`` for heads, ``("layer", "pos")`` for the residual stream) is the metric of the
    corrupted run with one activation patched from the clean run; ``clean`` / ``corrupted`` are the metric of the two
    runs unpatched, so ``(values - corrupted) / (clean - corrupted)`` is the share of the effect a cell restores."""

    values: Float[Tensor, "..."]
    axes: list[str]
    clean: float
    corrupted: float
    what: str

    def to_dataframe(self) -> Any:
        """One row per cell: a column per axis (and ``label`` = ``L{l}H{h}`` for heads), ``value`` and
        ``restored`` (the share of the clean − corrupted effect the cell brings back)."""
        df = grid_to_dataframe(self.values, tuple(self.axes))
        if "head" in self.axes:
            df.insert(len(self.axes), "label", [head_label(lay, h) for lay, h in zip(df["layer"], df["head"])])
        span = self.clean - self.corrupted
        df["restored"] = (df["value"] - self.corrupted) / span if span else float("nan")
        return df


def patching_sweep(model: Bridge, pair: dict[str, Any], what: Literal["heads", "resid"] = "heads") -> PatchingResult:
    """Exact activation patching of one pair from :func:`qa_patching_pairs` (clean → corrupted, metric: logit
    difference of the clean and corrupted first answer tokens), per head and position (``what="heads"``) or per
    residual-stream position (``"resid"``)."""
    if what not in ("heads", "resid"):
        raise RecallCircuitsError(f"what must be 'heads' or 'resid', got {what!r}")
    clean, corr = torch.tensor([pair["clean"]]), torch.tensor([pair["corrupted"]])
    metric = logit_diff_metric(torch.tensor([pair["correct"]]), torch.tensor([pair["wrong"]]))
    with torch.inference_mode():
        ends = [float(metric(model(x)[:, -1]).mean()) for x in (clean, corr)]
    if what == "heads":
        return PatchingResult(patch_heads_by_pos(model, clean, corr, metric), ["layer", "pos", "head"], ends[0],
                              ends[1], what)
    return PatchingResult(patch_resid_by_pos(model, clean, corr, metric), ["layer", "pos"], ends[0], ends[1], what)


def qa_patching_pairs(tokenizer: Tokenizer, dataset: Any, n_pairs: int, split: str = "ood", *, what: str = "n_pairs"
                      ) -> list[dict[str, Any]]:
    """(clean, corrupted) QA prompts of the same attribute and token length, for different people with different
    first answer tokens; and, for the clean person, the BIO prefix up to the value with role positions."""
    checks.split(split, allow_all=True, allow_none=False)
    checks.positive(n_pairs, what)
    qa = dataset.qa(None if split == "all" else split)
    toks = [tokenize_qa(tokenizer, e) for e in qa]
    bio = {e["person"]: tokenize_bio(tokenizer, e) for e in dataset.bio() if e.get("copy", 0) == 0}
    pairs, used = [], set()
    for i, (e, t) in enumerate(zip(qa, toks)):
        if i in used:
            continue
        for j in range(i + 1, len(qa)):
            f, u = qa[j], toks[j]
            if j in used or f["attribute"] != e["attribute"] or f["person"] == e["person"]:
                continue
            if t["predict_pos"] != u["predict_pos"]:
                continue
            a, b = t["input_ids"][t["predict_pos"] + 1], u["input_ids"][u["predict_pos"] + 1]
            if a == b:
                continue
            fact = next(x for x in bio[e["person"]]["facts"] if x["attribute"] == e["attribute"])
            pairs.append({"clean": t["input_ids"][: t["predict_pos"] + 1],
                          "corrupted": u["input_ids"][: u["predict_pos"] + 1], "correct": a, "wrong": b,
                          "attribute": e["attribute"], "people": (e["person"], f["person"]),
                          "bio": bio[e["person"]]["input_ids"][: fact["predict_pos"] + 1],
                          "roles": {"subject": (fact["subject"][-1], u["roles"]["subject"][-1]),
                                    "relation": (fact["relation"][-1], u["roles"]["relation"][-1]),
                                    "predict": (fact["predict_pos"], u["predict_pos"])}})
            used |= {i, j}
            break
        if len(pairs) >= n_pairs:
            break
    if len(pairs) < n_pairs:
        raise RecallCircuitsError(f"{what} = {n_pairs}, but the {split} questions make only {len(pairs)} (clean, "
                                  "corrupted) pairs of equal length with different answers")
    return pairs
