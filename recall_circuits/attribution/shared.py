"""Top-k sets, the shared set S_k = Top_k(BIO) ∩ Top_k(QA), and where S lives (docs/paper.md §3, §5).

``top_k_mask`` finds the k largest entries of a flat vector without sorting it: the k-th largest value comes from a
selection (``kthvalue``, linear time), everything above it is in, and ties at the threshold are broken towards the
lowest flat index, so the set is deterministic.

Example::

    curve = rc.shared_curve(res.influence["bio"], res.influence["qa"], ks)   # a SharedCurve: |S_k|/k, chance k/P
    S = rc.shared_mask(res.influence["bio"], res.influence["qa"], k=100)
    stats = rc.head_stats(res.space, S)                                      # HeadStats: per head / neuron / tensor
    stats.to_dataframe()                                                  # per query head, largest first
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from recall_circuits.errors import RecallCircuitsError
from recall_circuits.models.params import ATTN_VIEWS, COMPONENTS, MLP_VIEWS, ParamSpace
from recall_circuits.results import Result, head_rows


def top_k_mask(x: Float[Tensor, " P"], k: int) -> Bool[Tensor, " P"]:
    """Boolean mask of the k largest entries of ``x``; ties at the threshold go to the lowest indices."""
    if x.ndim != 1:
        raise RecallCircuitsError(f"expected a flat vector, got shape {tuple(x.shape)}")
    P = x.numel()
    if not 0 <= k <= P:
        raise RecallCircuitsError(f"k = {k} is outside [0, P = {P}]")
    if k == 0:
        return torch.zeros(P, dtype=torch.bool)
    if k == P:
        return torch.ones(P, dtype=torch.bool)
    thresh = torch.kthvalue(x, P - k + 1).values   # the k-th largest value
    mask = x > thresh
    need = k - int(mask.sum())
    if need > 0:
        tied = (x == thresh).nonzero().squeeze(1)[:need]
        mask[tied] = True
    return mask


def shared_mask(bio: Tensor, qa: Tensor, k: int) -> Bool[Tensor, " P"]:
    if bio.shape != qa.shape:
        raise RecallCircuitsError(f"influence vectors differ in shape: {tuple(bio.shape)} vs {tuple(qa.shape)}")
    return top_k_mask(bio, k) & top_k_mask(qa, k)


def log_grid(P: int, start: int = 10, per_decade: int = 2, max_frac: float = 0.5) -> list[int]:
    """k on a log grid from ``start`` up to ``max_frac`` · P."""
    hi = max(start, int(P * max_frac))
    n = int(math.floor(math.log10(hi / start) * per_decade)) + 1
    ks = sorted({int(round(start * 10 ** (i / per_decade))) for i in range(n)} | {hi})
    return [k for k in ks if 1 <= k <= P]


@dataclass(frozen=True, eq=False)
class SharedCurve(Result):
    """|S_k|/k along a grid of k (:func:`shared_curve`): ``shared_fraction[i]`` = |Top_k(BIO) ∩ Top_k(QA)| / k at
    ``k[i]``, and ``chance_fraction[i]`` = k / P, the expected overlap of two independent random k-sets."""

    k: list[int]
    shared_fraction: list[float]
    chance_fraction: list[float]

    def to_dataframe(self) -> Any:
        import pandas as pd  # noqa: PLC0415  (pandas loads only for a DataFrame)

        return pd.DataFrame({"k": self.k, "shared_fraction": self.shared_fraction,
                             "chance_fraction": self.chance_fraction})

    def to_dict(self) -> dict[str, list[Any]]:
        """The form a trace's ``summary.json`` keeps (``k``, ``shared_fraction``, ``chance_fraction``)."""
        return {"k": list(self.k), "shared_fraction": list(self.shared_fraction),
                "chance_fraction": list(self.chance_fraction)}


def shared_curve(bio: Float[Tensor, " P"], qa: Float[Tensor, " P"], ks: list[int]) -> SharedCurve:
    """|S_k|/k and the chance overlap k/P for each k in ``ks``.

    Example::

        rc.shared_curve(res.influence["bio"], res.influence["qa"], [10, 100, 1000]).to_dataframe()
    """
    P = bio.numel()
    frac = [float(shared_mask(bio, qa, k).sum()) / k for k in ks]
    return SharedCurve([int(k) for k in ks], frac, [k / P for k in ks])


# ---------------------------------------------------------------------------------------------------------------
# Counting a mask (or any non-negative weights over the parameter space) per head, neuron and tensor


def count_per_head(space: ParamSpace, masks: dict[str, Tensor]) -> dict[str, Float[Tensor, "n_layers n_units"]]:
    """Entries of a parameter mask (or any non-negative weights) per head and component.

    Q and O are ``[n_layers, n_heads]``; K and V are ``[n_layers, n_kv_heads]`` (per KV group). Biases of the
    space (b_Q/b_K/b_V) are added to their component.
    """
    space.check_masks(masks)
    out: dict[str, Tensor] = {c: torch.zeros(space.n_layers, space.n_kv_heads if ATTN_VIEWS[c][4] else space.n_heads)
                              for c in COMPONENTS}
    for layer in range(space.n_layers):
        for comp, (_, w_name, b_attr, b_name, _) in ATTN_VIEWS.items():
            for attr, name in ((comp, w_name), (b_attr, b_name)):
                full = f"blocks.{layer}.{name}"
                if attr is None or full not in space.by_name:
                    continue
                m = masks[full].detach().reshape(-1).float()
                out[comp][layer] += m[space.unit_indices(layer, attr)].sum(dim=1)
    return out


def count_per_query_head(space: ParamSpace, masks: dict[str, Tensor], gqa: Literal["full", "split"] = "split"
                         ) -> Float[Tensor, "n_layers n_heads"]:
    """Q+K+V+O count per query head. Under GQA the K/V count of a group is divided equally among its query
    heads (``"split"``, the project's Shared Size per head: the table sums to the attention total) or
    attributed to each of them in full (``"full"``: the entries restoring the head touches)."""
    c = count_per_head(space, masks)
    share = space.n_heads // space.n_kv_heads
    kv = (c["K"] + c["V"]).repeat_interleave(share, dim=1)
    if gqa == "split":
        kv = kv / share
    return c["Q"] + c["O"] + kv


def count_per_neuron(space: ParamSpace, masks: dict[str, Tensor]) -> Float[Tensor, "n_layers d_mlp"]:
    """Entries per MLP neuron: its W_in (and W_gate) column and W_out row."""
    space.check_masks(masks)
    rows = []
    for layer in range(space.n_layers):
        total = None
        for attr, (name, _) in MLP_VIEWS.items():
            full = f"blocks.{layer}.{name}"
            if full not in space.by_name:
                continue
            m = masks[full].detach().reshape(-1).float()
            per_unit = m[space.unit_indices(layer, attr)].sum(dim=1)
            total = per_unit if total is None else total + per_unit
        if total is None:
            raise RecallCircuitsError("the parameter space has no MLP tensors")
        rows.append(total)
    return torch.stack(rows)


def count_per_tensor(space: ParamSpace, masks: dict[str, Tensor]) -> dict[str, float]:
    return {i.name: float(masks[i.name].float().sum()) for i in space.infos}


def gini(values: Tensor) -> float:
    """Gini coefficient of non-negative values (0: equal, → 1: concentrated)."""
    v = values.flatten().double().sort().values
    n, s = v.numel(), v.sum()
    if n == 0 or s == 0:
        return 0.0
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(((2 * i - n - 1) * v).sum() / (n * s))


def top_share(values: Tensor, frac: float = 0.1) -> float:
    """Share of the total held by the top ``frac`` of entries (at least one)."""
    v = values.flatten().double()
    if v.sum() == 0:
        return 0.0
    n = max(1, int(round(frac * v.numel())))
    return float(v.topk(n).values.sum() / v.sum())


@dataclass(frozen=True, eq=False)
class HeadStats(Result):
    """Where a flat mask's entries sit (:func:`head_stats`): ``per_component[c]`` ``[layer, unit]`` counts of Q, K,
    V, O (K/V per KV group); ``per_head`` ``[layer, head]`` per query head (K/V of a group split equally among its
    query heads, so it sums to ``attn_total``); ``per_neuron`` ``[layer, d_mlp]`` when MLPs are included; per tensor
    and per layer·module counts; the share of the top 10% of heads (neurons) and the Gini coefficient over heads."""

    per_component: dict[str, Float[Tensor, "layer unit"]]
    per_head: Float[Tensor, "layer head"]
    per_tensor: dict[str, float]
    per_layer_module: dict[str, float]
    attn_total: float
    top10pct_head_share: float
    head_gini: float
    gqa_attribution: str
    per_neuron: Float[Tensor, "layer neuron"] | None = None
    top10pct_neuron_share: float | None = None
    mlp_total: float | None = None

    def to_dataframe(self) -> Any:
        """One row per query head: ``layer``, ``head``, ``label``, ``value`` (entries), sorted by ``value``."""
        import pandas as pd  # noqa: PLC0415  (pandas loads only for a DataFrame)

        df = pd.DataFrame(head_rows(self.per_head))
        return df.sort_values(["value", "layer", "head"], ascending=[False, True, True], ignore_index=True)


def head_stats(space: ParamSpace, mask: Bool[Tensor, " P"]) -> HeadStats:
    """Counts of a flat mask per head (Q, K, V, O; K/V per KV group), per query head, per neuron, per tensor,
    per layer and module, with concentration figures over query heads (K/V of a group split equally among its
    query heads, so the table sums to the attention total)."""
    if mask.shape != (space.P,):
        raise RecallCircuitsError(f"mask has shape {tuple(mask.shape)}, expected ({space.P},)")
    masks = space.unflatten(mask)
    per_comp = count_per_head(space, masks)
    per_head = count_per_query_head(space, masks, gqa="split")
    per_tensor = count_per_tensor(space, masks)
    per_layer_module = {f"L{i.layer}.{i.module}": 0.0 for i in space.infos if i.layer is not None}
    for i in space.infos:
        if i.layer is not None:
            per_layer_module[f"L{i.layer}.{i.module}"] += per_tensor[i.name]
    mlp: dict[str, Any] = {}
    if any(i.module == "mlp" for i in space.infos):
        per_neuron = count_per_neuron(space, masks)
        mlp = {"per_neuron": per_neuron, "top10pct_neuron_share": top_share(per_neuron, 0.1),
               "mlp_total": float(per_neuron.sum())}
    return HeadStats(per_comp, per_head, per_tensor, per_layer_module,
                     attn_total=float(sum(c.sum() for c in per_comp.values())),
                     top10pct_head_share=top_share(per_head, 0.1), head_gini=gini(per_head),
                     gqa_attribution="K/V entries are counted per KV group; per query head they are split equally "
                                     "among the group's query heads (per_head) — restoring a query head restores its "
                                     "whole group", **mlp)


def random_like_mask(space: ParamSpace, mask: Bool[Tensor, " P"], seed: int = 0) -> Bool[Tensor, " P"]:
    """A random mask with the same number of entries in every tensor as ``mask`` (the control set)."""
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(space.P, dtype=torch.bool)
    for i in space.infos:
        n = int(mask[i.offset:i.offset + i.numel].sum())
        if n:
            out[i.offset + torch.randperm(i.numel, generator=g)[:n]] = True
    return out
