"""Weight interventions that restore pretrained values, in place and undone exactly (docs/paper.md §4).

``restore_params(ft, base, space, mask)`` sets the masked entries of the fine-tuned model's analysed tensors to the
pretrained values for the duration of a ``with`` block; ``restore_heads`` does the same for whole heads (Q and O of
the query head, K and V of its KV group). On exit the saved values are written back, so the model is bit-identical
afterwards. ``restore_ablation`` evaluates QA ID/OOD under several such sets.

Example::

    with rc.restore_params(ft, base, space, S):       # S restored to pretrained values inside the block
        logits = ft(tokens)
    with rc.restore_heads(ft, base, [(0, 1)]):        # or whole heads: (layer, head)
        logits = ft(tokens)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool
from torch import Tensor

from recall_circuits import checks
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.hints import Bridge
from recall_circuits.models.params import COMPONENTS, Component, ParamSpace, head_views, source_views
from recall_circuits.results import Result
from recall_circuits.training.evaluation import evaluate


@contextlib.contextmanager
def restore_params(ft: Bridge, base: Bridge, space: ParamSpace, mask: Bool[Tensor, " P"]) -> Iterator[Any]:
    """Within the block, ``ft``'s entries under ``mask`` (over ``space``) hold ``base``'s values."""
    if mask.shape != (space.P,) or mask.dtype != torch.bool:
        raise RecallCircuitsError(f"mask must be a bool vector of shape ({space.P},), got {mask.dtype} "
                                  f"{tuple(mask.shape)}")
    ft_p, base_p = space.params(ft), space.params(base)
    saved: list[tuple[Tensor, tuple[Tensor, ...], Tensor]] = []
    try:
        with torch.no_grad():
            for info in space.infos:
                local = mask[info.offset:info.offset + info.numel].nonzero().squeeze(1)
                if local.numel() == 0:
                    continue
                p, src = ft_p[info.name], base_p[info.name]
                if src.shape != p.shape:
                    raise RecallCircuitsError(f"{info.name}: base shape {tuple(src.shape)} != {tuple(p.shape)}")
                where = torch.unravel_index(local, tuple(p.shape))
                saved.append((p, where, p[where].clone()))
                p[where] = src[where].to(p.dtype)
        yield ft
    finally:
        with torch.no_grad():
            for p, where, old in reversed(saved):
                p[where] = old


def qk_norm_views(model: Bridge, layer: int) -> dict[str, Tensor]:
    """The weights of ``layer``'s query and key norms where its attention has them (QK-norm: Qwen3, OLMo 2, Gemma
    3), as ``q_norm`` / ``k_norm`` (the tensors the forward reads); empty for attention without them."""
    orig = getattr(model.blocks[layer].attn, "_original_component", None)
    out = {}
    for name in ("q_norm", "k_norm"):
        w = getattr(getattr(orig, name, None), "weight", None)
        if isinstance(w, Tensor):
            out[name] = w
    return out


@contextlib.contextmanager
def restore_heads(ft: Bridge, base: Bridge, heads: list[tuple[int, int]],
                  components: tuple[Component, ...] = COMPONENTS, biases: bool = True,
                  norms: bool = False) -> Iterator[Any]:
    """Within the block, the listed (layer, head)s of ``ft`` hold ``base``'s slices: Q and O of the head, K and V
    of its KV group (under GQA this restores K/V for every query head of the group), and their biases.
    ``base`` is the pretrained model or its :class:`~recall_circuits.models.params.HeadSlices`.

    On a decoder with QK-norm the norms' weights are not a head's own (Qwen3: one weight over a head's dimensions,
    shared by every head of the layer; OLMo 2: one over all heads together), so by default they stay fine-tuned;
    ``norms=True`` also restores the whole query and key norm of each listed head's layer (every head of that layer
    then sees the pretrained norm; ``base`` must be the pretrained model)."""
    checks.bridge(ft, "ft")
    heads = checks.heads(heads, ft.cfg.n_layers, ft.cfg.n_heads)
    checks.members(components, COMPONENTS, "components")
    if norms:
        checks.bridge(base, "base (norms=True restores whole norm weights)")
    saved: list[tuple[Tensor, Tensor]] = []
    try:
        with torch.no_grad():
            for layer, head in heads:       # in range: checks.heads above
                src = source_views(base, layer, head, components, biases)
                for name, view in head_views(ft, layer, head, components, biases).items():
                    saved.append((view, view.clone()))
                    view.copy_(src[name])
            for layer in sorted({layer for layer, _ in heads}) if norms else []:
                src = qk_norm_views(base, layer)
                for name, view in qk_norm_views(ft, layer).items():
                    saved.append((view, view.clone()))
                    view.copy_(src[name])
        yield ft
    finally:
        with torch.no_grad():
            for view, old in reversed(saved):
                view.copy_(old)


@dataclass(frozen=True, eq=False)
class RestoreAblation(Result):
    """QA accuracy with each named parameter set restored to pretrained values (:func:`restore_ablation`):
    ``scores[condition]`` holds ``qa_{split}_acc``, ``qa_{split}_first_token_acc`` and ``n_restored``;
    condition ``none`` is the fine-tuned model as it is."""

    scores: dict[str, dict[str, Any]]

    def relative_drop(self, condition: str, metric: str = "qa_ood_acc") -> float:
        """The share of ``metric`` lost when ``condition`` is restored (NaN where the unrestored model scores 0)."""
        before = self.scores["none"][metric]
        return (before - self.scores[condition][metric]) / before if before else float("nan")

    def to_dataframe(self) -> Any:
        """One row per condition: ``condition``, ``n_restored`` and the scores."""
        import pandas as pd  # noqa: PLC0415  (pandas loads only for a DataFrame)

        return pd.DataFrame([{"condition": c, **s} for c, s in self.scores.items()])


def restore_ablation(ft: Bridge, base: Bridge, space: ParamSpace, dataset: Any, masks: dict[str, Tensor], *,
                     batch_size: int = 32, max_people: int | None = None) -> RestoreAblation:
    """QA accuracy (ID/OOD, exact and first token) of ``ft`` with each named mask restored, plus ``none``."""
    out = {}
    for name, m in {"none": torch.zeros(space.P, dtype=torch.bool), **masks}.items():
        with restore_params(ft, base, space, m):
            r = evaluate(ft, ft.tokenizer, dataset, batch_size=batch_size, bio=False, max_people=max_people)
        out[name] = {f"{s}_acc": r.accuracy[s] for s in ("qa_id", "qa_ood")}
        out[name].update({f"{s}_first_token_acc": r.first_token[s] for s in ("qa_id", "qa_ood")})
        out[name]["n_restored"] = int(m.sum())
    return RestoreAblation(out)


def save_mask(path: str, mask: Tensor) -> None:
    """A flat mask as safetensors: ``idx`` (int64 indices of the set) and ``P``."""
    from safetensors.torch import save_file  # noqa: PLC0415  (safetensors loads only when a file is read or written)

    save_file({"idx": mask.nonzero().squeeze(1).to(torch.int64), "P": torch.tensor([mask.numel()])}, path)


def load_mask(path: str, space: ParamSpace) -> Bool[Tensor, " P"]:
    """Read a mask file (``idx`` + ``P``, or a flat ``mask`` of length P) and check it fits ``space``."""
    from safetensors import SafetensorError  # noqa: PLC0415  (safetensors loads only when a file is read or written)
    from safetensors.torch import load_file  # noqa: PLC0415  (safetensors loads only when a file is read or written)

    try:
        t = load_file(path)
    except (OSError, SafetensorError) as exc:
        raise RecallCircuitsError(f"cannot read mask file {path}: {exc}") from exc
    if "mask" in t:
        m = t["mask"].flatten().bool()
        if m.numel() != space.P:
            raise RecallCircuitsError(f"mask in {path} has {m.numel()} entries, the parameter space has {space.P}")
        return m
    if "idx" not in t or "P" not in t:
        raise RecallCircuitsError(f"{path} holds neither 'mask' nor 'idx' + 'P'")
    if int(t["P"][0]) != space.P:
        raise RecallCircuitsError(f"mask in {path} is over {int(t['P'][0])} parameters, the space has {space.P}")
    idx = t["idx"].long()
    if idx.numel() and (idx.min() < 0 or idx.max() >= space.P):
        raise RecallCircuitsError(f"mask in {path} has indices outside [0, {space.P})")
    m = torch.zeros(space.P, dtype=torch.bool)
    m[idx] = True
    return m
