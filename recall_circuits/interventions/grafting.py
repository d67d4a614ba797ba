"""Model grafting (Panigrahi et al. 2023, "Task-specific skill localization"; docs/paper.md §4).

A sparse binary mask γ over the parameters selects which fine-tuning updates to keep:
θ(γ) = θ_pre + γ ⊙ (θ_ft − θ_pre). γ is learned on the QA(ID) loss through the relaxation γ = σ(s): s starts at
+``sigmoid_bias`` on an initial set (the top ``init_frac`` of |θ_ft − θ_pre|, or a given mask) and −bias
elsewhere, and is trained with Adam using ∂L/∂s = ∂L/∂θ ⊙ (θ_ft − θ_pre) ⊙ σ'(s) (the gradient reaches θ through
the model's own backward; the weights are written in place and restored exactly afterwards). Every
``eval_every`` steps the rounded mask (s > 0) is scored on a held-out validation part of the ID questions; the
best rounded mask is kept (ties: the sparser).

Example::

    res = rc.graft(ft, base, dataset, rc.GraftConfig(init_frac=1e-3))   # a GraftResult
    res.alpha, res.mask.sum()
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool
from torch import Tensor
from tqdm.auto import tqdm

from recall_circuits.artefacts import read_json
from recall_circuits.attribution.shared import top_k_mask
from recall_circuits.attribution.trace import per_example_loss
from recall_circuits.data.bios import Dataset, pad_batch, tokenize_qa
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.files import RESULT_META
from recall_circuits.hints import Bridge
from recall_circuits.models.loading import gradients_for
from recall_circuits.models.params import ParamSpace
from recall_circuits.results import Result, equal_values
from recall_circuits.training.evaluation import evaluate_qa

log = logging.getLogger(__name__)
FULL_SPACE = ("attn", "mlp", "other")


@dataclass(frozen=True, kw_only=True)
class GraftConfig:
    init_frac: float = 1e-3          # initial mask: this fraction of entries with the largest |θ_ft − θ_pre|
    sigmoid_bias: float = 10.0
    lr: float = 0.5                  # Adam on s
    steps: int = 40
    batch_size: int = 16
    eval_every: int = 10
    sparsity: float = 0.0            # λ · mean σ(s) added to the loss
    val_frac: float = 0.2            # share of ID questions held out for choosing the rounded mask
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.init_frac <= 1:
            raise RecallCircuitsError(f"init_frac must be in (0, 1], got {self.init_frac}")
        if not 0 < self.val_frac < 1 or self.steps < 0 or self.batch_size < 1 or self.eval_every < 1:
            raise RecallCircuitsError("val_frac must be in (0, 1); steps >= 0; batch_size, eval_every >= 1")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, eq=False)
class GraftResult(Result):
    """The learned graft (:func:`graft`): ``mask`` over ``space``'s flat layout, its density ``alpha`` = |γ|₀ / P,
    the validation accuracy of the kept (best rounded) mask, and the evaluations along the way (``history``).
    ``save(dir)`` / ``load(dir, model)`` round-trip it; the model rebuilds the parameter layout, which must match."""

    mask: Bool[Tensor, " P"]
    space: ParamSpace
    alpha: float
    val_acc: float
    history: list[dict[str, Any]]

    def __eq__(self, other: object) -> bool:
        return (type(other) is type(self) and self.space.layout() == other.space.layout()
                and all(equal_values(getattr(self, f), getattr(other, f))
                        for f in ("mask", "alpha", "val_acc", "history")))

    __hash__ = None

    def to_dataframe(self) -> Any:
        """The evaluations along the optimisation: one row per evaluation (step, val_acc, size)."""
        import pandas as pd  # noqa: PLC0415  (pandas loads only for a DataFrame)

        return pd.DataFrame(self.history)

    def _split(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        tensors, meta = super()._split()
        meta["space"] = self.space.layout()      # checked on load
        return tensors, meta

    @classmethod
    def load(cls, out: Any, model: Bridge | None = None) -> GraftResult:
        if model is None:
            raise RecallCircuitsError("GraftResult.load needs the model (a bridge of the grafted architecture)")

        space = graft_space(model)
        saved = read_json(Path(out) / RESULT_META).get("fields", {}).get("space")
        if saved != space.layout():
            raise RecallCircuitsError(f"{out} was grafted on another parameter layout than this model's")
        return cls._from_saved(out, space=space)


def _write(space: ParamSpace, model: Bridge, flat: Tensor) -> None:
    with torch.no_grad():
        params = space.params(model)
        for name, t in space.unflatten(flat).items():
            params[name].copy_(t.to(params[name].dtype))


@contextlib.contextmanager
def grafted(ft: Bridge, space: ParamSpace, pre: Tensor, diff: Tensor, gamma: Tensor) -> Iterator[Any]:
    """Within the block, ``ft`` holds θ_pre + γ ⊙ (θ_ft − θ_pre); afterwards its own weights, bit for bit."""
    if gamma.shape != (space.P,):
        raise RecallCircuitsError(f"mask has shape {tuple(gamma.shape)}, expected ({space.P},)")
    saved = space.flatten(space.params(ft)).clone()
    try:
        _write(space, ft, pre + gamma.to(pre.dtype) * diff)
        yield ft
    finally:
        _write(space, ft, saved)


def graft_space(ft: Bridge) -> ParamSpace:
    """Grafting acts on every parameter (tied tensors once), so γ = 0 is exactly the pretrained model."""
    return ParamSpace(ft, include=FULL_SPACE, biases=True)


def split_questions(dataset: Dataset, val_frac: float, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    qa = dataset.qa("id")
    if len(qa) < 2:
        raise RecallCircuitsError("grafting needs at least two ID questions (train and validation)")
    order = list(range(len(qa)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(val_frac * len(qa)))
    return [qa[i] for i in order[n_val:]], [qa[i] for i in order[:n_val]]


def graft(ft: Bridge, base: Bridge, dataset: Dataset, cfg: GraftConfig = GraftConfig(), *,
          init_mask: Bool[Tensor, " P"] | None = None, verbose: bool = False) -> GraftResult:
    """Learn a sparse graft of ``ft``'s updates over ``base`` on the QA(ID) loss; ``ft`` is unchanged afterwards."""
    space = graft_space(ft)
    if graft_space(base).P != space.P:
        raise RecallCircuitsError("base and fine-tuned models have different parameter spaces")
    pre = space.flatten(space.params(base)).float()
    ft_flat = space.flatten(space.params(ft)).float()
    diff = ft_flat - pre
    if init_mask is None:
        init_mask = top_k_mask(diff.abs(), max(1, round(cfg.init_frac * space.P)))
    if init_mask.shape != (space.P,):
        raise RecallCircuitsError(f"initial mask has shape {tuple(init_mask.shape)}, expected ({space.P},)")
    train_q, val_q = split_questions(dataset, cfg.val_frac, cfg.seed)
    tok = ft.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    train_t = [tokenize_qa(tok, e) for e in train_q]
    s = torch.where(init_mask, cfg.sigmoid_bias, -cfg.sigmoid_bias).float().requires_grad_(False)
    opt = torch.optim.Adam([torch.nn.Parameter(s)], lr=cfg.lr)
    s_param = opt.param_groups[0]["params"][0]
    rng = random.Random(cfg.seed)
    saved = ft_flat.clone()
    params = space.params(ft)

    def score(gamma: Tensor) -> float:
        with grafted(ft, space, pre, diff, gamma):
            return evaluate_qa(ft, tok, val_q)["acc"]

    best_mask = (s_param.detach() > 0).clone()
    best = {"val_acc": score(best_mask), "size": int(best_mask.sum()), "step": 0}
    history = [dict(best)]
    try:
        with gradients_for(ft, params.values()):
            for step in tqdm(range(1, cfg.steps + 1), disable=not verbose, desc="graft"):
                gamma = torch.sigmoid(s_param.detach())
                _write(space, ft, pre + gamma * diff)
                batch = rng.sample(train_t, min(cfg.batch_size, len(train_t)))
                ids, labels, mask = pad_batch(batch, pad)
                for p in params.values():
                    p.grad = None
                per_example_loss(ft(ids, attention_mask=mask), labels).mean().backward()
                g = space.flatten({k: (p.grad if p.grad is not None else torch.zeros_like(p))
                                   for k, p in params.items()})
                dsig = gamma * (1 - gamma)
                s_param.grad = (g.float() * diff + cfg.sparsity / space.P) * dsig
                opt.step()
                if step % cfg.eval_every == 0 or step == cfg.steps:
                    rounded = (s_param.detach() > 0).clone()
                    acc = score(rounded)
                    history.append({"step": step, "val_acc": acc, "size": int(rounded.sum())})
                    if acc > best["val_acc"] or (acc == best["val_acc"] and int(rounded.sum()) < best["size"]):
                        best_mask, best = rounded, {"val_acc": acc, "size": int(rounded.sum()), "step": step}
    finally:
        _write(space, ft, saved)
    return GraftResult(best_mask, space, int(best_mask.sum()) / space.P, best["val_acc"], history)


def transfer_mask(mask: Tensor, src: ParamSpace, dst: ParamSpace) -> Bool[Tensor, " P"]:
    """A mask over ``src`` expressed over ``dst`` (entries of tensors ``dst`` lacks are dropped; new ones False)."""
    out = torch.zeros(dst.P, dtype=torch.bool)
    by_name = src.unflatten(mask)
    for info in dst.infos:
        if info.name in by_name:
            out[info.offset:info.offset + info.numel] = by_name[info.name].reshape(-1)
    return out


def graft_report(ft: Bridge, base: Bridge, dataset: Dataset, res: GraftResult, shared: Tensor | None = None,
                 shared_space: ParamSpace | None = None, batch_size: int = 32) -> dict[str, Any]:
    """Grafted QA accuracy ID/OOD, α, the share of S inside γ, and the accuracy lost when S is restored first."""
    space = res.space
    pre = space.flatten(space.params(base)).float()
    diff = space.flatten(space.params(ft)).float() - pre

    def acc(gamma: Tensor) -> dict[str, float]:
        with grafted(ft, space, pre, diff, gamma):
            return {f"qa_{sp}_acc": evaluate_qa(ft, ft.tokenizer, dataset.qa(sp), batch_size)["acc"]
                    for sp in ("id", "ood")}

    out: dict[str, Any] = {"alpha": res.alpha, "graft_size": int(res.mask.sum()), "P": space.P,
                           "val_acc": res.val_acc, "history": res.history, "grafted": acc(res.mask)}
    if shared is not None and shared_space is not None:
        S = transfer_mask(shared, shared_space, space)
        inter = int((S & res.mask).sum())
        out["shared_in_graft"] = inter
        out["shared_share_of_graft"] = inter / max(1, int(res.mask.sum()))
        out["grafted_without_shared"] = acc(res.mask & ~S)
        out["acc_lost_without_shared"] = {k: out["grafted"][k] - out["grafted_without_shared"][k]
                                          for k in out["grafted"]}
    return out
