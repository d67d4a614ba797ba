"""Cross-task gradient trace (arXiv 2505.16178 §3; docs/paper.md §3).

For a fine-tuned model and a task t ∈ {bio, qa}, the influence of parameter θ_i is

    Δ_t(θ_i) = Σ_x |∂L_t(x)/∂θ_i|          (mode "sum_abs", the default)

over the task's examples x, with options ``abs_of_sum`` (|Σ_x ∂L_t(x)/∂θ_i|) and ``sq_sum`` (Σ_x (∂L_t(x)/∂θ_i)²),
and an optional scaling by |θ_ft − θ_pre| (``movement``) or |θ| (``weight``). L_t(x) is the mean next-token loss of
example x over its label tokens: QA on answer tokens; BIO on all tokens (``bio_loss="all"``) or on the attribute
values only (``"attribute"``).

Exact per-example sums without one backward per example: every analysed weight is the weight of a linear map
y = W a, so ∂L(x)/∂W = Σ_pos g_x,pos ⊗ a_x,pos with a the layer input and g = ∂L/∂y. Forward hooks keep a, tensor
hooks on y receive g during one batched backward (weights do not require grad, so autograd never forms their
gradients), and each example's outer product is formed in one reused buffer (over its positions up to its last
label; later positions have zero gradient) and added to the float32 sum. One matrix product per example and weight
into a cache-resident buffer is about twice as fast on CPU as a batched ``bmm`` whose ``[chunk, out, in]`` result is
then reduced.

A padded position costs a full forward and backward, so examples are packed: ``batch_size`` length-sorted examples
per forward, up to ``pack`` of them to a row of at most ``row_tokens`` tokens (QA: 4 a row; BIO biographies of 60-70
tokens: one) (:func:`~recall_circuits.data.bios.pack_batch`), kept apart by a block-diagonal
causal mask and restarting ``position_ids``. Each example then computes exactly what it computes alone (checked on
each call by :func:`packing_works`, with padded batches and a log line where it fails; on the tiny architectures and
SmolLM2 the losses are bit-identical).
``pack=None`` falls back to padded batches, length-sorted and cut where padding would exceed ``max_padding`` of their
real tokens (:func:`~recall_circuits.data.bios.length_batches`). :func:`trace_gradients_loop` is the obviously-correct
reference (one backward per example) used by the tests and the benchmark.

Under ``torchrun`` (a process group of N processes, :mod:`recall_circuits.training.parallel`) each process traces every
N-th batch and the influence vectors are all-reduced, so every process returns the whole Δ (for ``abs_of_sum`` the
signed sums are reduced before the absolute value).

Example::

    res = rc.cross_task_trace(ft, dataset, rc.TraceConfig(n_people=4))   # a TraceResult
    res.influence["bio"].shape          # (P,) over ParamSpace(ft) (attention + MLP weights)
    res.per_head(k=100)                 # Shared Size per head as a DataFrame
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from recall_circuits import checks
from recall_circuits.artefacts import read_json
from recall_circuits.attribution.shared import count_per_query_head, shared_mask
from recall_circuits.data.bios import (
    Dataset,
    PackedBatch,
    length_batches,
    pack_batch,
    pad_batch,
    tokenize_bio,
    tokenize_qa,
)
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.files import RESULT_META
from recall_circuits.hints import Bridge, Tokenizer
from recall_circuits.models.loading import forget_graph, gradients_for
from recall_circuits.models.params import ParamSpace
from recall_circuits.results import Result, equal_values, head_label
from recall_circuits.training.parallel import world

log = logging.getLogger(__name__)
MODES = ("sum_abs", "abs_of_sum", "sq_sum")
SCALES = (None, "movement", "weight")
TASKS = ("bio", "qa")


@dataclass(frozen=True, kw_only=True)
class TraceConfig:
    n_people: int = 20                # people whose examples are traced (the paper: 20)
    split: str = "id"                 # id | ood | all
    mode: str = "sum_abs"
    bio_loss: str = "all"             # all | attribute
    scale: str | None = None          # None | movement | weight
    batch_size: int = 8               # examples per forward and backward
    pack: int | None = 4              # examples per packed row; None: one padded row each
    include: tuple[str, ...] = ("attn", "mlp")
    biases: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise RecallCircuitsError(f"unknown mode {self.mode!r}; choose from {list(MODES)}")
        if self.scale not in SCALES:
            raise RecallCircuitsError(f"unknown scale {self.scale!r}; choose from {list(SCALES)}")
        if self.bio_loss not in ("all", "attribute"):
            raise RecallCircuitsError(f"unknown bio_loss {self.bio_loss!r}")
        if self.split not in ("id", "ood", "all"):
            raise RecallCircuitsError(f"unknown split {self.split!r}")
        if self.n_people < 1 or self.batch_size < 1:
            raise RecallCircuitsError("n_people and batch_size must be >= 1")
        if self.pack is not None and self.pack < 1:
            raise RecallCircuitsError(f"pack must be >= 1 or None, got {self.pack}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["include"] = list(self.include)
        return d


DEFAULT_K_FRAC = 1e-3    # k = 10⁻³ of the traced parameters unless told otherwise (scripts, pipeline, notebooks)


@dataclass(frozen=True, eq=False)
class TraceResult(Result):
    """The cross-task trace of one model: per-parameter influence for BIO and QA over ``space``'s flat layout.

    ``shared(k)`` is the shared set S_k; ``per_head(k)`` its Shared Size per query head as a DataFrame (labels
    ``L{l}H{h}``); ``save(dir)`` / ``load(dir, model)`` round-trip it (a :class:`~recall_circuits.results.Result`:
    safetensors + ``result.json`` with a schema version; the model rebuilds the parameter layout, which must match
    the saved one)."""

    influence: dict[str, Float[Tensor, " P"]]
    space: ParamSpace
    config: TraceConfig
    n_examples: dict[str, int] = field(default_factory=dict)
    people: list[int] = field(default_factory=list)

    def shared(self, k: int) -> Tensor:
        return shared_mask(self.influence["bio"], self.influence["qa"], k)

    @property
    def default_k(self) -> int:
        """The k every part of the project uses unless told otherwise: ``DEFAULT_K_FRAC`` (10⁻³) of the traced
        parameters, at least 1."""
        return max(1, round(DEFAULT_K_FRAC * self.space.P))

    def per_head(self, k: int | None = None, *, gqa: str = "split") -> Any:
        """Shared Size per query head at ``k`` (default :attr:`default_k`): the Q+K+V+O entries of S_k, under GQA a
        group's K/V entries split equally among its query heads, so the column sums to S_k's attention entries
        (the same numbers as :func:`~recall_circuits.attribution.shared.head_stats`). Columns ``layer``, ``head``,
        ``label``, ``shared``, ``rank`` (1 = largest; tied heads share a rank), sorted by ``shared``. ``gqa="full"``
        gives instead ``touched``: a group's K/V entries counted in full for each of its query heads (what restoring
        the head touches; not a Shared Size, the column does not sum to S_k)."""
        import pandas as pd  # noqa: PLC0415  (pandas loads only for a DataFrame)

        if gqa not in ("split", "full"):
            raise RecallCircuitsError(f"gqa must be 'split' or 'full', not {gqa!r}")
        k = self._k(k)
        masks = self.space.unflatten(self.shared(k).float())
        grid = count_per_query_head(self.space, masks, gqa=gqa)  # type: ignore[arg-type]
        col = "shared" if gqa == "split" else "touched"
        rows = [(lay, h, head_label(lay, h), float(grid[lay, h])) for lay in range(grid.shape[0])
                for h in range(grid.shape[1])]
        df = pd.DataFrame(rows, columns=["layer", "head", "label", col])
        df["rank"] = df[col].rank(method="min", ascending=False).astype(int)
        return df.sort_values([col, "layer", "head"], ascending=[False, True, True], ignore_index=True)

    def top_heads(self, k: int | None = None, n: int = 1) -> list[tuple[int, int]]:
        """The query heads ranked ``n`` or better by Shared Size at ``k`` (default :attr:`default_k`), as (layer,
        head), largest first. Ties are reported as ties: heads that share the ``n``-th rank are all returned (more
        than ``n``); heads with no shared entry are never returned (fewer than ``n`` when fewer have any)."""
        if n < 1:
            raise RecallCircuitsError(f"n must be >= 1, got {n}")
        df = self.per_head(k)
        df = df[(df["rank"] <= n) & (df["shared"] > 0)]
        return [(int(lay), int(h)) for lay, h in zip(df["layer"], df["head"])]

    def to_dataframe(self, k: int | None = None) -> Any:
        """The head table at ``k`` (default :attr:`default_k`): :meth:`per_head` with a ``k`` column."""
        k = self._k(k)
        return self.per_head(k).assign(k=k)

    def _k(self, k: int | None) -> int:
        k = self.default_k if k is None else k
        if not 1 <= k <= self.space.P:
            raise RecallCircuitsError(f"k = {k} is outside [1, P = {self.space.P}]")
        return k

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, TraceResult) and self.space.layout() == other.space.layout()
                and all(equal_values(getattr(self, f), getattr(other, f))
                        for f in ("influence", "config", "n_examples", "people")))

    __hash__ = None

    def _split(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        tensors, meta = super()._split()
        meta["space"] = self.space.layout()      # checked on load
        meta["config"] = self.config.to_dict()
        return tensors, meta

    @classmethod
    def load(cls, out: str | Path, model: Bridge | None = None) -> TraceResult:
        """Read a saved trace; ``model`` (a bridge of the traced architecture) rebuilds the parameter layout."""
        if model is None:
            raise RecallCircuitsError("TraceResult.load needs the model (a bridge of the traced architecture)")
        fields = read_json(Path(out) / RESULT_META).get("fields", {})
        cfg = TraceConfig(**{**fields["config"], "include": tuple(fields["config"]["include"])})
        space = ParamSpace(model, include=cfg.include, biases=cfg.biases)
        if fields.get("space") != space.layout():
            raise RecallCircuitsError(f"{out} was traced on another parameter layout than this model's")
        return cls._from_saved(out, space=space, config=cfg)


# ---------------------------------------------------------------------------------------------------------------
# Examples


def select_people(dataset: Dataset, n_people: int, split: str, *, what: str = "n_people",
                  where: str | None = None) -> list[int]:
    """The first ``n_people`` people of ``split`` by id; more than the split holds is an error (naming the count as
    ``what`` and the split as ``where``, by default "the <split> split")."""
    checks.split(split, allow_all=True, allow_none=False)
    ids = dataset.person_ids(None if split == "all" else split)
    if not ids:
        raise RecallCircuitsError(f"the dataset has no people in split {split!r}")
    checks.count(n_people, len(ids), what, where or f"the {split} split")
    return sorted(ids)[:n_people]


def task_examples(tokenizer: Tokenizer, dataset: Dataset, task: str, people: list[int], bio_loss: str = "all"
                  ) -> list[dict[str, list[int]]]:
    """Tokenised examples (``input_ids``, ``labels`` with -100 where no loss) of ``task`` for ``people``."""
    keep = set(people)
    out = []
    if task == "qa":
        for e in dataset.qa():
            if e["person"] in keep:
                t = tokenize_qa(tokenizer, e)
                out.append({"input_ids": t["input_ids"], "labels": t["labels"]})
    elif task == "bio":
        for e in dataset.bio():
            if e["person"] in keep and e.get("copy", 0) == 0:
                t = tokenize_bio(tokenizer, e)
                labels = list(t["labels"])
                if bio_loss == "attribute":
                    values = {i for f in t["facts"] for i in f["value"]}
                    labels = [lab if i in values else -100 for i, lab in enumerate(labels)]
                out.append({"input_ids": t["input_ids"], "labels": labels})
    else:
        raise RecallCircuitsError(f"unknown task {task!r}; choose from {list(TASKS)}")
    if not out:
        raise RecallCircuitsError(f"no {task} examples for the selected people")
    return out


def per_example_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean next-token cross-entropy over each example's label tokens → [batch]."""
    tgt = labels[:, 1:]
    # [N, vocab] layout: the [batch, vocab, pos] layout reduces over a strided axis and loses ~1e-4 in float32
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                           tgt.reshape(-1).clamp(min=0), reduction="none").view(tgt.shape)
    valid = (tgt != -100).to(ce.dtype)
    n = valid.sum(1)
    if (n == 0).any():
        raise RecallCircuitsError("an example has no label tokens")
    return (ce * valid).sum(1) / n


class _StopForward(Exception):
    """Raised from a hook to end a forward pass early (the rest of the model is not needed)."""


def label_position_loss(model: Bridge, ids: Tensor, mask: Tensor, labels: Tensor, *,
                        position_ids: Tensor | None = None, segment: Tensor | None = None,
                        n_items: int | None = None) -> Tensor:
    """Per-example mean loss computing logits only where a label is predicted: the forward stops at ``ln_final``
    and the unembedding runs on the predicting positions alone (for QA a quarter of the positions; the
    unembedding of a 49k vocabulary is a large part of a small model's cost). Equal to
    ``per_example_loss(model(ids), labels)``. For packed rows (:func:`~recall_circuits.data.bios.pack_batch`) pass the
    4D ``mask``, ``position_ids`` and ``segment`` (the example of each position) and ``n_items``: the result is
    then per packed example."""
    box: dict[str, Tensor] = {}

    def grab(module: torch.nn.Module, inputs: Any, output: Tensor) -> None:
        box["x"] = output
        raise _StopForward

    handle = model.ln_final.register_forward_hook(grab)
    kwargs = {} if position_ids is None else {"position_ids": position_ids}
    try:
        model(ids, attention_mask=mask, use_cache=False, **kwargs)
    except _StopForward:
        pass
    finally:
        handle.remove()
    tgt = labels[:, 1:]
    b, p = (tgt != -100).nonzero(as_tuple=True)
    if b.numel() == 0:
        raise RecallCircuitsError("an example has no label tokens")
    logits = model.unembed(box["x"][b, p])
    ce = torch.nn.functional.cross_entropy(logits.float(), tgt[b, p], reduction="none")
    item = b if segment is None else segment[b, p]
    size = ids.shape[0] if n_items is None else n_items
    n = torch.zeros(size, dtype=ce.dtype, device=ce.device).index_add_(0, item, torch.ones_like(ce))
    if (n == 0).any():
        raise RecallCircuitsError("an example has no label tokens")
    return torch.zeros_like(n).index_add_(0, item, ce) / n


def packing_works(model: Bridge, items: list[dict[str, list[int]]], pad_id: int) -> bool:
    """Whether ``model`` gives packed examples (:func:`~recall_circuits.data.bios.pack_batch`, 4D mask and
    ``position_ids``) the losses they get alone, checked on up to three examples. Some decoders that
    TransformerBridge supports ignore a 4D mask or restart no positions; the trace then pads instead."""
    items = items[:3]
    dev = next(model.parameters()).device
    with torch.no_grad():
        alone = []
        for it in items:
            ids, labels, mask = pad_batch([it], pad_id)
            alone.append(label_position_loss(model, ids.to(dev), mask.to(dev), labels.to(dev)))
        try:
            packed = packed_loss(model, pack_batch(items, len(items), pad_id))
        except (RuntimeError, ValueError, TypeError):
            return False
    return bool(torch.allclose(packed, torch.cat(alone), rtol=1e-4, atol=1e-5))


# packing_works per model object and pad id: the check costs four forward passes (about a fifth of a 16-example
# trace of SmolLM2 on a CPU), and its answer is a property of the model's attention code, not of the examples
_PACKING_OK: weakref.WeakKeyDictionary[Any, dict[int, bool]] = weakref.WeakKeyDictionary()


def packing_works_cached(model: Bridge, items: list[dict[str, list[int]]], pad_id: int) -> bool:
    """:func:`packing_works`, checked once per model object and pad id."""
    known = _PACKING_OK.setdefault(model, {})
    if pad_id not in known:
        known[pad_id] = packing_works(model, items, pad_id)
    return known[pad_id]


def packed_loss(model: Bridge, pb: PackedBatch) -> Tensor:
    """:func:`label_position_loss` of packed rows: the mean loss of each packed example, in ``pb``'s item order."""
    p = next(model.parameters())
    return label_position_loss(model, pb.input_ids.to(p.device), pb.attention_mask(p.dtype).to(p.device),
                               pb.labels.to(p.device), position_ids=pb.position_ids.to(p.device),
                               segment=pb.segment.to(p.device), n_items=len(pb.spans))


# ---------------------------------------------------------------------------------------------------------------
# The fast trace


@dataclass
class _Target:
    name: str
    module: torch.nn.Module
    transposed: bool      # weight stored [in, out] (Conv1D) instead of [out, in]
    is_bias: bool


def _targets(model: Bridge, space: ParamSpace) -> list[_Target]:
    out = []
    for info in space.infos:
        mod_name, pname = info.name.rsplit(".", 1)
        try:
            module = model.get_submodule(mod_name)
        except AttributeError as exc:
            raise RecallCircuitsError(f"{info.name}: no module {mod_name}") from exc
        orig = getattr(module, "_original_component", module)
        kind = type(orig).__name__
        if kind not in ("Linear", "Conv1D") and not isinstance(orig, torch.nn.Linear):
            raise RecallCircuitsError(f"{info.name} is not the weight of a linear map ({kind}); the fast trace "
                                      "covers linear weights: use trace_gradients_loop for it")
        out.append(_Target(info.name, module, kind == "Conv1D", pname == "bias"))
    return out


@contextlib.contextmanager
def _grad_only_through_activations(model: Bridge) -> Iterator[None]:
    """No parameter requires grad; the embedding output does, so autograd forms activation gradients only."""
    saved = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    handle = model.embed.register_forward_hook(lambda m, i, o: o.requires_grad_(True))
    try:
        yield
    finally:
        handle.remove()
        forget_graph(model)
        for p, r in saved:
            p.requires_grad_(r)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block (restored after): the hooks create tens of thousands of
    short-lived tensor views per batch, freed by reference counting, and each full collection walks every live
    object of a loaded model's process (~460k). Measured on 16 QA examples: 2.04 -> 1.97 s, best of 8."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _acc_dtype(model: Bridge) -> torch.dtype:
    return torch.float64 if next(model.parameters()).dtype == torch.float64 else torch.float32


class _Accumulator:
    """Δ(θ) summed batch by batch from hooks: a forward hook keeps each target's input activation, a gradient hook on
    its output forms the per-example weight gradients (activation × output gradient, one product per example's
    positions) and adds their |.| or square into a flat buffer (``acc`` holds its views, one per tensor)."""

    def __init__(self, space: ParamSpace, targets: list[_Target], mode: str, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.mode, self.dtype = mode, dtype
        self.flat = torch.empty(space.P, dtype=dtype, device=device)
        self.acc = space.unflatten(self.flat)
        # weights whose first product is still to come: it is written in place of a zero fill and an addition
        self.fresh = set() if mode == "abs_of_sum" else {t.name for t in targets if not t.is_bias}
        for name, view in self.acc.items():
            if name not in self.fresh:
                view.zero_()
        self.acts: dict[str, Tensor] = {}
        self.bufs: dict[Any, Tensor] = {}
        self.flipped: dict[str, Tensor] = {}   # accumulated transposed: the same memory, viewed [c, r]
        # per example of the batch: (row, first position, positions up to and including its last predicting one)
        self.spans: list[tuple[int, int, int]] = []
        self.cuts: list[int] = []     # split points of the flattened [rows * pos] batch ...
        self.pieces: list[int] = []   # ... and the piece holding each example's used positions, in example order
        self.last_batch = False

    def batch(self, spans: list[tuple[int, int, int]], width: int, last: bool) -> None:
        """The layout of the batch whose backward comes next."""
        self.spans[:] = spans
        self.cuts[:], self.pieces[:] = _pieces(spans, width)
        self.last_batch = last

    def forward_hook(self, t: _Target) -> Callable[..., None]:
        def hook(module: torch.nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            if not t.is_bias:
                self.acts[t.name] = inputs[0].detach().to(self.dtype)
            output.register_hook(lambda g: self.add(t, g))
        return hook

    def add(self, t: _Target, g: Tensor) -> None:
        """One target's contribution of the batch, from its output gradient ``g``."""
        a = None if t.is_bias else self.acts.pop(t.name)
        g = g.to(self.dtype)
        if self.mode == "abs_of_sum":
            if t.is_bias:
                self.acc[t.name] += g.sum((0, 1))
            else:
                gw = torch.einsum("bto,bti->oi", g, a)
                self.acc[t.name] += gw.T if t.transposed else gw
        elif t.is_bias:
            pe = torch.stack([g[r, s:s + n].sum(0) for r, s, n in self.spans])
            self.acc[t.name] += (pe.abs() if self.mode == "sum_abs" else pe.square()).sum(0)
        else:
            assert a is not None
            self._add_weight(t, g, a)

    def _add_weight(self, t: _Target, g: Tensor, a: Tensor) -> None:
        # the product is formed as [out, in] (g^T a) or [in, out] (a^T g), whichever has more rows than columns
        # (measured on CPU: ~1.4x faster for SmolLM2's down and k/v projections than the other way)
        left, right = (g, a) if g.shape[-1] >= a.shape[-1] else (a, g)
        flip = (left is g) == t.transposed   # formed layout differs from the stored one
        into = self._formed(t.name) if flip else self.acc[t.name]
        buf = self.bufs.get(into.shape)
        if buf is None:   # one scratch buffer per shape, reused by every weight and batch
            buf = self.bufs[into.shape] = torch.empty(into.shape, dtype=self.dtype, device=g.device)
        # every example's rows as a view, from one split of the flattened batch (fewer Python-level ops)
        lp = torch.tensor_split(left.reshape(-1, left.shape[-1]).T, self.cuts, dim=1)
        rp = torch.tensor_split(right.reshape(-1, right.shape[-1]), self.cuts)
        todo = self.pieces
        if t.name in self.fresh:
            self.fresh.discard(t.name)
            torch.mm(lp[todo[0]], rp[todo[0]], out=into)
            into.abs_() if self.mode == "sum_abs" else into.square_()
            todo = todo[1:]
        if self.mode == "sum_abs":
            for k in todo:
                into += torch.mm(lp[k], rp[k], out=buf).abs_()
        else:
            for k in todo:
                into += torch.mm(lp[k], rp[k], out=buf).square_()
        if flip and self.last_batch:   # back to the stored layout while it is in cache
            self._unflip(t.name)

    def _formed(self, name: str) -> Tensor:
        if name not in self.flipped:
            r, c = self.acc[name].shape
            self.flipped[name] = self.acc[name].view(-1).view(c, r)
        return self.flipped[name]

    def _unflip(self, name: str) -> None:
        view = self.flipped.pop(name)
        tmp = self.bufs.get(("T", view.shape))
        if tmp is None:
            tmp = self.bufs[("T", view.shape)] = torch.empty(self.acc[name].shape, dtype=self.dtype,
                                                              device=view.device)
        self.acc[name].copy_(transpose_into(tmp, view))

    def result(self, n_proc: int) -> Tensor:
        for name in self.fresh:   # no gradient reached it: zero influence
            self.acc[name].zero_()
        for name in list(self.flipped):   # (normally done by the last batch's hooks)
            self._unflip(name)
        if n_proc > 1:   # sums of the processes' batches (abs_of_sum: of the signed sums, before the |.|)
            torch.distributed.all_reduce(self.flat)
        if self.mode == "abs_of_sum":
            self.flat.abs_()
        return self.flat.cpu()


def _trace_batches(model: Bridge, examples: list[dict[str, list[int]]], batches: list[list[int]], pack: int | None,
                   row_tokens: int, pad_id: int) -> Iterator[tuple[Tensor, list[tuple[int, int, int]], int]]:
    """Per batch: the per-example losses (not yet backwarded), the examples' spans and the batch's width."""
    dev = next(model.parameters()).device
    for batch in batches:
        items = [examples[i] for i in batch]
        if pack is None:
            ids, labels, mask = pad_batch(items, pad_id)
            spans = [(x, 0, _used(labels[x])) for x in range(len(items))]
            yield label_position_loss(model, ids.to(dev), mask.to(dev), labels.to(dev)), spans, ids.shape[1]
        else:
            per_row = max(1, min(pack, row_tokens // max(len(it["input_ids"]) for it in items)))
            pb = pack_batch(items, per_row, pad_id)
            spans = [(r, s, _used(pb.labels[r, s:s + n])) for r, s, n in pb.spans]
            yield packed_loss(model, pb), spans, pb.input_ids.shape[1]


def _plan_batches(model: Bridge, examples: list[dict[str, list[int]]], batch_size: int, pack: int | None,
                  max_padding: float | None, pad_id: int) -> tuple[list[list[int]], int | None]:
    """Length-sorted batches and the packing to use (None where this model does not keep packed examples apart:
    padded batches cut where padding would exceed ``max_padding``)."""
    if pack is not None and pack < 1:
        raise RecallCircuitsError(f"pack must be >= 1 or None, got {pack}")
    lengths = [len(e["input_ids"]) for e in examples]
    # packed rows have no padding to cut on: fixed-size batches in length order
    batches = length_batches(lengths, batch_size, max_padding if pack is None else None)
    if pack is not None and not packing_works_cached(model, [examples[i] for b in batches for i in b][-3:],
                                                     pad_id):
        log.info("%s does not keep packed examples apart: the trace pads its batches instead", type(model).__name__)
        return length_batches(lengths, batch_size, max_padding), None
    return batches, pack


def trace_gradients(model: Bridge, examples: list[dict[str, list[int]]], space: ParamSpace, *, mode: str = "sum_abs",
                    batch_size: int = 8, pad_id: int = 0, verbose: bool = False, desc: str = "trace",
                    pack: int | None = 4, row_tokens: int = 128, max_padding: float | None = 0.1,
                    distributed: bool = True) -> Float[Tensor, " P"]:
    """Δ(θ) over ``examples`` for every entry of ``space`` (flat, float32 or float64), in batched backwards of
    ``batch_size`` length-sorted examples packed up to ``pack`` to a row, fewer where a row would pass ``row_tokens``
    (attention over a packed row costs its length squared); with ``pack=None``, padded batches of at most
    ``batch_size``, cut where padding would exceed ``max_padding`` (:func:`~recall_circuits.data.bios.length_batches`).

    In a process group (``torchrun``; :mod:`recall_circuits.training.parallel`) and with ``distributed``, every process
    takes every world-th batch and the sums are all-reduced: each process returns the whole Δ. Every process must
    call with the same examples and model."""
    if mode not in MODES:
        raise RecallCircuitsError(f"unknown mode {mode!r}")
    if not examples:
        raise RecallCircuitsError("empty example set")
    targets = _targets(model, space)
    acc = _Accumulator(space, targets, mode, _acc_dtype(model), next(model.parameters()).device)
    batches, pack = _plan_batches(model, examples, batch_size, pack, max_padding, pad_id)
    rank, n_proc = world() if distributed else (0, 1)
    batches = batches[rank::n_proc]
    with _grad_only_through_activations(model), _gc_paused():
        handles = [t.module.register_forward_hook(acc.forward_hook(t)) for t in targets]
        try:
            steps = _trace_batches(model, examples, batches, pack, row_tokens, pad_id)
            for j, (loss, spans, width) in enumerate(tqdm(steps, total=len(batches), desc=desc,
                                                          disable=not verbose or rank != 0)):
                acc.batch(spans, width, last=j == len(batches) - 1)
                loss.sum().backward()
                acc.acts.clear()
        finally:
            for h in handles:
                h.remove()
    return acc.result(n_proc)


def _pieces(spans: list[tuple[int, int, int]], width: int) -> tuple[list[int], list[int]]:
    """Split points of a flattened ``[rows * width]`` batch and, per span (row, start, length), the index of the
    piece that is exactly its positions (``torch.tensor_split`` semantics)."""
    flat = [(r * width + s, r * width + s + n) for r, s, n in spans]
    points = sorted({p for a, b in flat for p in (a, b)} - {0})
    first = {p: i + 1 for i, p in enumerate(points)} | {0: 0}
    return points, [first[a] for a, _ in flat]


def _used(labels: Tensor) -> int:
    """Positions of one example (labels from its first token) up to and including its last predicting one."""
    has = (labels[1:] != -100).nonzero()
    return int(has.max()) + 1 if has.numel() else 0


def transpose_into(dst: Tensor, src: Tensor) -> Tensor:
    """``dst.copy_(src.T)`` for contiguous 2D tensors, in square tiles where both sides allow (measured on CPU for a
    1536 × 576 float32 matrix in cache: 0.30 ms in 64-tiles vs 0.48 ms for the plain strided copy)."""
    r, c = src.shape
    for b in (64, 32, 16):
        if r % b == 0 and c % b == 0:
            dst.view(c // b, b, r // b, b).copy_(src.view(r // b, b, c // b, b).permute(2, 3, 0, 1))
            return dst
    return dst.copy_(src.T)


def trace_gradients_loop(model: Bridge, examples: list[dict[str, list[int]]], space: ParamSpace, *,
                         mode: str = "sum_abs") -> Float[Tensor, " P"]:
    """Reference: one forward + backward per example, reading ``.grad`` of every analysed tensor."""
    if not examples:
        raise RecallCircuitsError("empty example set")
    params = space.params(model)
    dtype = _acc_dtype(model)
    acc = {k: torch.zeros(p.shape, dtype=dtype) for k, p in params.items()}
    with gradients_for(model, params.values()):
        for ex in examples:
            ids, labels, _ = pad_batch([ex], 0)
            for p in params.values():
                p.grad = None
            per_example_loss(model(ids), labels).sum().backward()
            for k, p in params.items():
                assert p.grad is not None
                g = p.grad.to(dtype)
                acc[k] += g.abs() if mode == "sum_abs" else (g.square() if mode == "sq_sum" else g)
    if mode == "abs_of_sum":
        acc = {k: v.abs() for k, v in acc.items()}
    return space.flatten(acc)


def cross_task_trace(model: Bridge, dataset: Dataset, cfg: TraceConfig = TraceConfig(), *, base: Bridge | None = None,
          verbose: bool = False) -> TraceResult:
    """The cross-task trace of ``model`` (a fine-tuned bridge) for BIO and QA of ``cfg.n_people`` people."""
    checks.bridge(model)
    if cfg.scale == "movement" and base is None:
        raise RecallCircuitsError("scale='movement' needs the pretrained model (base=...)")
    space = ParamSpace(model, include=cfg.include, biases=cfg.biases)
    people = select_people(dataset, cfg.n_people, cfg.split)
    tok = model.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    influence, counts = {}, {}
    for task in TASKS:
        ex = task_examples(tok, dataset, task, people, cfg.bio_loss)
        counts[task] = len(ex)
        influence[task] = trace_gradients(model, ex, space, mode=cfg.mode, batch_size=cfg.batch_size,
                                          pad_id=pad, verbose=verbose, desc=f"trace {task}", pack=cfg.pack)
    if cfg.scale is not None:
        theta = space.flatten(space.params(model)).to(influence["bio"].dtype)
        factor = (theta - space.flatten(space.params(base)).to(theta.dtype)).abs() if cfg.scale == "movement" \
            else theta.abs()
        influence = {k: v * factor for k, v in influence.items()}
    return TraceResult(influence, space, cfg, counts, people)
