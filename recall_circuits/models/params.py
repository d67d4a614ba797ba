"""Per-head and per-neuron parameter map of a ``TransformerBridge`` (GQA and fused QKV aware).

Every index set here is derived from the storage of the views the bridge's forward reads (``attn.W_Q`` …
``mlp.W_out``), never from a hard-coded layout, so GPT-2's Conv1D-fused QKV, GPT-NeoX's per-head interleaving and
Llama's grouped K/V all come out right. The analysed parameter space is a list of ``bridge.state_dict()`` tensors
(attention Q/K/V/O and MLP weights by default) flattened in order into one vector of length ``P``.

Example::

    space = rc.ParamSpace(model)                      # attention + MLP weights
    idx = space.head_flat_indices(layer=1, head=2, component="K")   # K of the KV group serving query head 2
    space.locate(int(idx[0]))                         # Location(tensor='blocks.1.attn.k.weight', ..., component='K')
    counts = rc.count_per_head(space, space.unflatten(mask))   # {'Q': [L, H], 'K': [L, n_kv], 'V': ..., 'O': ...}
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Int
from torch import Tensor

from recall_circuits.errors import RecallCircuitsError
from recall_circuits.hints import Bridge

Component = Literal["Q", "K", "V", "O"]
COMPONENTS: tuple[Component, ...] = ("Q", "K", "V", "O")
# component -> (attn view attribute, state_dict suffix, bias view attribute, bias suffix, per KV group?)
ATTN_VIEWS = {
    "Q": ("W_Q", "attn.q.weight", "b_Q", "attn.q.bias", False),
    "K": ("W_K", "attn.k.weight", "b_K", "attn.k.bias", True),
    "V": ("W_V", "attn.v.weight", "b_V", "attn.v.bias", True),
    "O": ("W_O", "attn.o.weight", None, "attn.o.bias", False),
}
# MLP view attribute -> (state_dict suffix, axis of the view that indexes neurons)
MLP_VIEWS = {"W_in": ("mlp.in.weight", 1), "W_gate": ("mlp.gate.weight", 1), "W_out": ("mlp.out.weight", 0),
        "b_in": ("mlp.in.bias", 0)}
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")


def n_kv_heads(model: Bridge) -> int:
    return int(model.blocks[0].attn.W_K.shape[0])


def kv_group(model: Bridge, head: int) -> int:
    """The KV head serving query head ``head`` (GQA: ``head // (n_heads // n_kv_heads)``)."""
    return head // (model.cfg.n_heads // n_kv_heads(model))


def query_heads_of_group(model: Bridge, group: int) -> list[int]:
    per = model.cfg.n_heads // n_kv_heads(model)
    return list(range(group * per, (group + 1) * per))


def check_head(model: Bridge, layer: int, head: int) -> None:
    if not 0 <= layer < model.cfg.n_layers:
        raise RecallCircuitsError(f"layer {layer} out of range (model has {model.cfg.n_layers} layers)")
    if not 0 <= head < model.cfg.n_heads:
        raise RecallCircuitsError(f"head {head} out of range (model has {model.cfg.n_heads} heads per layer)")


def head_views(model: Bridge, layer: int, head: int, components: tuple[Component, ...] = COMPONENTS,
               biases: bool = True) -> dict[str, Tensor]:
    """Views (sharing storage with the weights the forward reads) of head ``head``'s slices in ``layer``.

    Keys: ``W_Q``, ``W_K``, ``W_V``, ``W_O`` and, where the model has them, ``b_Q``, ``b_K``, ``b_V``. K and V are the
    slices of the KV group serving the head (under GQA shared with other query heads). ``b_O`` is shared by all
    heads and never included.
    """
    check_head(model, layer, head)
    attn = model.blocks[layer].attn
    return _select_slices(lambda attr: getattr(attn, attr, None), head, kv_group(model, head), components, biases)


def _select_slices(get: Any, head: int, kv: int, components: tuple[Component, ...],
                   biases: bool) -> dict[str, Tensor]:
    """Index head ``head`` (Q, O, biases of Q) or its KV group ``kv`` (K, V) out of the per-layer tensors
    ``get(attr)`` returns (``None`` where the model has no such tensor)."""
    out: dict[str, Tensor] = {}
    for comp in components:
        w_attr, _, b_attr, _, per_kv = ATTN_VIEWS[comp]
        i = kv if per_kv else head
        out[w_attr] = get(w_attr)[i]
        if biases and b_attr is not None:
            b = get(b_attr)
            if b is not None:
                out[b_attr] = b[i]
    return out


class HeadSlices:
    """Detached copies of every head's slices of a model (what :func:`head_views` returns), so head restores and
    sweeps can run against a pretrained model without keeping the whole of it in memory (attention weights only).

    ``HeadSlices(base).views(layer, head)`` has the keys and shapes of ``head_views(base, layer, head)``; K and V are
    stored once per KV group.
    """

    def __init__(self, model: Bridge) -> None:
        self.n_layers, self.n_heads = int(model.cfg.n_layers), int(model.cfg.n_heads)
        self.n_kv = n_kv_heads(model)
        self._t: dict[tuple[int, str], Tensor] = {}
        for layer in range(self.n_layers):
            attn = model.blocks[layer].attn
            for w_attr, _, b_attr, _, _ in ATTN_VIEWS.values():
                for attr in (w_attr, b_attr):
                    t = getattr(attn, attr, None) if attr else None
                    if t is not None and attr:
                        self._t[(layer, attr)] = t.detach().clone()

    def views(self, layer: int, head: int, components: tuple[Component, ...] = COMPONENTS,
              biases: bool = True) -> dict[str, Tensor]:
        if not 0 <= layer < self.n_layers or not 0 <= head < self.n_heads:
            raise RecallCircuitsError(f"head ({layer}, {head}) out of range ({self.n_layers} layers, "
                                      f"{self.n_heads} heads)")
        return _select_slices(lambda attr: self._t.get((layer, attr)), head,
                              head // (self.n_heads // self.n_kv), components, biases)


def source_views(source: Any, layer: int, head: int, components: tuple[Component, ...] = COMPONENTS,
                 biases: bool = True) -> dict[str, Tensor]:
    """:func:`head_views` of a model, or the stored slices of a :class:`HeadSlices`."""
    if isinstance(source, HeadSlices):
        return source.views(layer, head, components, biases)
    return head_views(source, layer, head, components, biases)


def view_flat_indices(param: Tensor, view: Tensor) -> Int[Tensor, "..."]:
    """For a ``view`` sharing storage with ``param``: the index in ``param.flatten()`` of each element of ``view``."""
    if param.untyped_storage().data_ptr() != view.untyped_storage().data_ptr():
        raise RecallCircuitsError("view does not share storage with the parameter")
    n_storage = param.untyped_storage().nbytes() // param.element_size()
    pos = torch.full((n_storage,), -1, dtype=torch.long)
    torch.as_strided(pos, param.shape, param.stride(), param.storage_offset()).copy_(
        torch.arange(param.numel()).view(param.shape))
    idx = torch.as_strided(pos, view.shape, view.stride(), view.storage_offset()).clone()
    if (idx < 0).any():
        raise RecallCircuitsError("view reaches outside the parameter")
    return idx


@dataclass(frozen=True)
class TensorInfo:
    name: str           # bridge.state_dict() key, e.g. 'blocks.3.attn.q.weight'
    shape: tuple[int, ...]
    offset: int         # start in the flat parameter vector
    layer: int | None
    module: str         # 'attn', 'mlp' or 'other'

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


@dataclass(frozen=True)
class Location:
    tensor: str
    element: int                  # index within the tensor's flatten()
    layer: int | None
    module: str
    component: str | None         # 'Q','K','V','O' for attention, 'W_in','W_gate','W_out','b_in' for MLP
    unit: int | None              # query head (Q, O), KV group (K, V) or neuron; None if not per unit


class ParamLayout:
    """An ordered set of analysed ``state_dict`` tensors flattened into one vector: which tensors (``infos``, each
    with its offset, layer and module), ``P`` entries in all, and the moves between named tensors and the flat
    vector.

    ``include``: any of ``"attn"`` (Q/K/V/O), ``"mlp"`` (W_in, W_gate, W_out), ``"other"`` (embeddings,
    unembedding, norms). ``biases``: also the attention and MLP biases.
    """

    def __init__(self, model: Bridge, include: tuple[str, ...] = ("attn", "mlp"), biases: bool = False) -> None:
        bad = set(include) - {"attn", "mlp", "other"}
        if bad or not include:
            raise RecallCircuitsError(f"unknown parameter groups {sorted(bad)}; use attn, mlp, other")
        self.model = model
        self.include, self.biases = tuple(include), biases
        self.n_layers, self.n_heads = model.cfg.n_layers, model.cfg.n_heads
        self.n_kv_heads = n_kv_heads(model)
        sd = model.state_dict(keep_vars=True)
        infos, offset = [], 0
        seen: set[tuple[int, int, tuple[int, ...], tuple[int, ...]]] = set()
        for name, p in sd.items():
            module, layer = self._classify(name)
            if module is None:
                continue
            key = (p.untyped_storage().data_ptr(), p.storage_offset(), tuple(p.shape), tuple(p.stride()))
            if key in seen:  # tied weights (e.g. unembed = embed): one tensor, counted once
                continue
            seen.add(key)
            infos.append(TensorInfo(name, tuple(p.shape), offset, layer, module))
            offset += p.numel()
        if not infos:
            raise RecallCircuitsError(f"no parameters matched {include}")
        self.infos: list[TensorInfo] = infos
        self.by_name = {i.name: i for i in infos}
        self.P = offset
        self._offsets = [i.offset for i in infos]
        self._unit_cache: dict[tuple[str, str], Tensor] = {}

    def _classify(self, name: str) -> tuple[str | None, int | None]:
        m = _BLOCK_RE.match(name)
        is_bias = name.endswith(".bias")
        if m:
            layer, rest = int(m.group(1)), m.group(2)
            attn_names = {v[1] for v in ATTN_VIEWS.values()} | (
                {v[3] for v in ATTN_VIEWS.values()} if self.biases else set())
            mlp_names = {"mlp.in.weight", "mlp.gate.weight", "mlp.out.weight"} | (
                {"mlp.in.bias", "mlp.out.bias"} if self.biases else set())
            if rest in attn_names and "attn" in self.include:
                return "attn", layer
            if rest in mlp_names and "mlp" in self.include:
                return "mlp", layer
            if rest.startswith(("attn.", "mlp.")) and (rest.endswith(".weight") or is_bias):
                return None, layer
            return ("other", layer) if "other" in self.include else (None, layer)
        return ("other", None) if "other" in self.include else (None, None)

    # -- tensors ----------------------------------------------------------------------------------------------
    def layout(self) -> list[list[Any]]:
        """The flat layout as JSON data: ``[name, shape]`` of each analysed tensor, in order (saved results record
        it, and check it against the model they are loaded with)."""
        return [[i.name, list(i.shape)] for i in self.infos]

    def params(self, model: Bridge | None = None) -> dict[str, Tensor]:
        """The analysed tensors of ``model`` (default: the model the space was built on), by name."""
        sd = (model or self.model).state_dict(keep_vars=True)
        return {i.name: sd[i.name] for i in self.infos}

    def flatten(self, tensors: dict[str, Tensor]) -> Tensor:
        missing = [i.name for i in self.infos if i.name not in tensors]
        if missing:
            raise RecallCircuitsError(f"{len(missing)} tensors missing, e.g. {missing[0]}")
        return torch.cat([tensors[i.name].detach().reshape(-1) for i in self.infos])

    def unflatten(self, vec: Tensor) -> dict[str, Tensor]:
        if vec.ndim != 1 or vec.numel() != self.P:
            raise RecallCircuitsError(f"flat vector has shape {tuple(vec.shape)}, expected ({self.P},)")
        return {i.name: vec[i.offset:i.offset + i.numel].view(i.shape) for i in self.infos}

    def check_masks(self, masks: dict[str, Tensor]) -> None:
        """Raise a one-line error unless ``masks`` holds one tensor of the right shape per analysed tensor."""
        for i in self.infos:
            if i.name not in masks:
                raise RecallCircuitsError(f"mask has no entry for {i.name}")
            if tuple(masks[i.name].shape) != i.shape:
                raise RecallCircuitsError(f"mask for {i.name} has shape {tuple(masks[i.name].shape)}, "
                                          f"expected {i.shape}")

    def _info(self, name: str) -> TensorInfo:
        if name not in self.by_name:
            raise RecallCircuitsError(f"{name} is not in the analysed parameter space ({self.include})")
        return self.by_name[name]


class ParamSpace(ParamLayout):
    """A :class:`ParamLayout` with its index sets: where each attention head (its Q, K, V, O slices; K and V per KV
    group), each MLP neuron and each flat index lie in the flat vector, read off the bridge's own stacked views.
    Counting a mask per head or neuron: :func:`recall_circuits.attribution.shared.count_per_head` and its
    companions."""

    def _view_and_param(self, layer: int, attr: str) -> tuple[Tensor | None, str, int]:
        """(stacked view, state_dict name, unit axis) for attention component letters or MLP view names."""
        if attr in ATTN_VIEWS:
            w_attr, name, _, _, _ = ATTN_VIEWS[attr]
            return getattr(self.model.blocks[layer].attn, w_attr), f"blocks.{layer}.{name}", 0
        if attr in ("b_Q", "b_K", "b_V"):
            comp = attr[-1]
            return getattr(self.model.blocks[layer].attn, attr), f"blocks.{layer}.{ATTN_VIEWS[comp][3]}", 0
        if attr in MLP_VIEWS:
            name, axis = MLP_VIEWS[attr]
            return getattr(self.model.blocks[layer].mlp, attr), f"blocks.{layer}.{name}", axis
        raise RecallCircuitsError(f"unknown component {attr!r}")

    def unit_indices(self, layer: int, attr: str) -> Int[Tensor, "n_units per_unit"]:
        """Indices (into the tensor's flatten()) of each unit's slice: row u = head/KV group/neuron u."""
        key = (str(layer), attr)
        if key not in self._unit_cache:
            view, name, axis = self._view_and_param(layer, attr)
            if view is None:
                raise RecallCircuitsError(f"layer {layer} has no {attr}")
            param = self.model.state_dict(keep_vars=True)[name]
            idx = view_flat_indices(param, view).movedim(axis, 0)
            self._unit_cache[key] = idx.reshape(idx.shape[0], -1)
        return self._unit_cache[key]

    def head_flat_indices(self, layer: int, head: int, component: Component) -> Int[Tensor, " n"]:
        """Global flat indices of query head ``head``'s slice of ``component`` (K/V: its KV group's slice)."""
        check_head(self.model, layer, head)
        _, name, _, _, per_kv = ATTN_VIEWS[component]
        info = self._info(f"blocks.{layer}.{name}")
        unit = kv_group(self.model, head) if per_kv else head
        return self.unit_indices(layer, component)[unit] + info.offset

    def neuron_flat_indices(self, layer: int, neuron: int) -> Int[Tensor, " n"]:
        """Global flat indices of MLP neuron ``neuron``: its W_in (and W_gate) column and W_out row."""
        parts = []
        for attr, (name, _) in MLP_VIEWS.items():
            full = f"blocks.{layer}.{name}"
            if full in self.by_name:
                parts.append(self.unit_indices(layer, attr)[neuron] + self.by_name[full].offset)
        return torch.cat(parts)

    def locate(self, flat: int) -> Location:
        """Which tensor, element, layer, component and head/KV group/neuron a flat index belongs to."""
        if not 0 <= flat < self.P:
            raise RecallCircuitsError(f"flat index {flat} out of range [0, {self.P})")
        info = self.infos[bisect.bisect_right(self._offsets, flat) - 1]
        element = flat - info.offset
        component, unit = None, None
        if info.layer is not None and info.module in ("attn", "mlp"):
            suffix = info.name.split(".", 2)[2]
            for attr, cand in self._components_of(suffix):
                hit = (self.unit_indices(info.layer, attr) == element).any(dim=1).nonzero()
                if len(hit):
                    component, unit = cand, int(hit[0])
                    break
        return Location(info.name, element, info.layer, info.module, component, unit)

    @staticmethod
    def _components_of(suffix: str) -> Iterator[tuple[str, str]]:
        for comp, (_, w_name, b_attr, b_name, _) in ATTN_VIEWS.items():
            if suffix == w_name:
                yield comp, comp
            if b_attr is not None and suffix == b_name:
                yield b_attr, comp
        for attr, (name, _) in MLP_VIEWS.items():
            if suffix == name:
                yield attr, attr

