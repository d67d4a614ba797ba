"""Two-stage and mixed full fine-tuning of a Hugging Face causal LM on bioS data (arXiv 2505.16178 §2).

- ``two-stage``: phase 1 trains on BIO of all people, phase 2 on QA of the ID people (each phase its own AdamW
  and schedule; the after-BIO checkpoint is kept).
- ``mixed``: one phase over BIO and QA(ID) together, shuffled (batches are of one format each, so that no batch
  pads a short QA to a biography's length; their order is shuffled).

The fair protocol, stated before any OOD number is seen: with ``epochs = E`` both strategies see every biography E
times and every ID question E times, with the same optimiser, learning rate, warm-up + decay schedule shape, batch
size and seed, hence the same number of QA updates and of optimiser steps. ``qa_lr`` (two-stage's QA phase; by
default ``lr``) exists for the sensitivity table, not for tuning one side.

Loss: BIO on all tokens, QA on answer tokens only; each optimiser step averages over the label tokens of the whole
(global, accumulated) batch, so gradient accumulation and DDP give the same update as one big batch.
Runs under ``torchrun`` (DDP; gloo on CPU). Checkpoints every ``checkpoint_every`` steps; ``resume`` continues to
bit-identical weights on CPU.

The fast path, for large batches on a GPU (each option also runs on CPU, and none changes the loss it computes):
``length_buckets`` makes each batch of one format from examples of similar length (an epoch's seeded shuffle is cut
into windows of 32 batches, each sorted by length, so little of a batch is padding; a different order of examples,
hence part of the run's identity); ``log_every`` reads the loss back to the host every N steps instead of every step
(no synchronisation of the device per step; ``metrics.jsonl`` still gets one line per step, and the weights are the
same); ``compile`` runs the model through ``torch.compile``. bfloat16 autocast (``bf16``) keeps the weights and
AdamW (fused) in float32.

Example::

    rc.train(rc.TrainConfig(model="tiny-llama", strategy="mixed", data="runs/quick/data", out="runs/ft/mixed",
                            epochs=2))     # returns the saved model's directory
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from recall_circuits.artefacts import atomic_dir, check_same, model_identity, read_json, write_json
from recall_circuits.data.bios import Dataset, data_identity, load_dataset, pad_batch, tokenize_bio, tokenize_qa
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.files import (
    CHECKPOINT_DIR,
    CHECKPOINT_OPTIMIZER,
    CHECKPOINT_RNG,
    CHECKPOINT_WEIGHTS,
    METRICS_FILE,
    SNAPSHOTS_DIR,
    STATE_FILE,
    TRAIN_META,
)
from recall_circuits.hints import HFModel, Tokenizer
from recall_circuits.models.loading import load_tokenizer, parse_dtype
from recall_circuits.models.registry import offline_and_quiet, resolve_model
from recall_circuits.training.parallel import is_main
from recall_circuits.training.parallel import world as _world

log = logging.getLogger(__name__)
Strategy = Literal["two-stage", "mixed"]
STRATEGIES = ("two-stage", "mixed")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    model: str
    strategy: str
    data: str
    out: str
    epochs: int = 10                 # E: BIO passes and QA passes, for both strategies
    lr: float = 5e-4
    qa_lr: float | None = None       # two-stage QA phase only; None = lr
    bio_epochs: int | None = None    # two-stage BIO phase; None = epochs; 0 = start from a given after-BIO model
    batch_size: int = 4              # global batch (examples per optimiser step)
    grad_accum: int = 1              # micro-batches per step (per process)
    warmup_frac: float = 0.03
    schedule: str = "linear"         # linear | cosine | constant (after warm-up), per phase
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    mix_bio_repeat: int = 1          # mixed: BIO copies per epoch (BIO:QA ratio)
    mix_qa_repeat: int = 1           # mixed: QA copies per epoch
    seed: int = 0
    checkpoint_every: int = 200      # steps; 0 = only at phase ends
    snapshot_every: int = 0          # steps; > 0 keeps out/snapshots/step-NNNNNN (weights only) for analyses
    bf16: bool = False
    gradient_checkpointing: bool = False
    freeze_embeddings: bool = False
    optimizer_impl: str = "fused"    # fused | foreach: the same AdamW; fused is ~8x faster per step on CPU
    length_buckets: bool = False     # batches of examples of similar length (less padding; another order)
    log_every: int = 1               # steps between reading the loss back to the host (metrics: every step)
    compile: bool = False            # torch.compile the model
    device: str = "cpu"
    eval_batch_size: int = 32

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise RecallCircuitsError(f"unknown strategy {self.strategy!r}; choose from {list(STRATEGIES)}")
        if self.schedule not in ("linear", "cosine", "constant"):
            raise RecallCircuitsError(f"unknown schedule {self.schedule!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise RecallCircuitsError("epochs, batch_size and grad_accum must be >= 1")
        if self.batch_size % self.grad_accum:
            raise RecallCircuitsError(f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}")
        if self.optimizer_impl not in ("fused", "foreach"):
            raise RecallCircuitsError(f"unknown optimizer_impl {self.optimizer_impl!r}")
        if self.log_every < 1:
            raise RecallCircuitsError(f"log_every must be >= 1, got {self.log_every}")
        if self.snapshot_every < 0 or self.checkpoint_every < 0:
            raise RecallCircuitsError("snapshot_every and checkpoint_every must be >= 0")
        if self.lr <= 0 or (self.qa_lr is not None and self.qa_lr <= 0):
            raise RecallCircuitsError("learning rates must be positive")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Phase:
    name: str
    examples: list[tuple[str, int]]   # (format, index into the tokenised list); order is fixed per epoch by seed
    epochs: int
    lr: float


def build_phases(cfg: TrainConfig, n_bio: int, n_qa: int) -> list[Phase]:
    bio = [("bio", i) for i in range(n_bio)]
    qa = [("qa", i) for i in range(n_qa)]
    if cfg.strategy == "two-stage":
        bio_epochs = cfg.epochs if cfg.bio_epochs is None else cfg.bio_epochs
        qa_phase = Phase("qa", qa, cfg.epochs, cfg.qa_lr or cfg.lr)
        return [Phase("bio", bio, bio_epochs, cfg.lr), qa_phase] if bio_epochs else [qa_phase]
    return [Phase("mixed", bio * cfg.mix_bio_repeat + qa * cfg.mix_qa_repeat, cfg.epochs, cfg.lr)]


_PHASE_SALT = {"bio": 1, "qa": 2, "mixed": 3}


BUCKET_WINDOW = 32   # length buckets: batches per window of the shuffle that is sorted by length


def epoch_batches(phase: Phase, epoch: int, batch_size: int, seed: int,
                  lengths: dict[str, list[int]] | None = None) -> list[list[tuple[str, int]]]:
    """The batches of one epoch: a seeded shuffle, then batches of a single format (the formats' batches are
    interleaved in a seeded random order). Depends only on (seed, phase, epoch): resume needs no sampler state.
    With ``lengths`` (format -> each example's length) each window of ``BUCKET_WINDOW`` batches of the shuffle is
    sorted by length before it is cut, so a batch holds examples of similar length (the same number of batches)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch * 7919 + _PHASE_SALT[phase.name])
    by_fmt: dict[str, list[tuple[str, int]]] = {}
    for j in torch.randperm(len(phase.examples), generator=g).tolist():
        ex = phase.examples[j]
        by_fmt.setdefault(ex[0], []).append(ex)
    if lengths is not None:
        w = batch_size * BUCKET_WINDOW
        by_fmt = {f: [ex for i in range(0, len(lst), w) for ex in sorted(lst[i:i + w], key=lambda e: lengths[f][e[1]])]
                  for f, lst in by_fmt.items()}
    batches = [lst[i:i + batch_size] for lst in by_fmt.values() for i in range(0, len(lst), batch_size)]
    order = torch.randperm(len(batches), generator=g).tolist()
    return [batches[i] for i in order]


def _adamw(params: list[torch.nn.Parameter], lr: float, cfg: TrainConfig) -> torch.optim.Optimizer:
    kw: dict[str, Any] = {"lr": lr, "weight_decay": cfg.weight_decay, "betas": (0.9, 0.999), "eps": 1e-8}
    if cfg.optimizer_impl == "fused":
        try:
            return torch.optim.AdamW(params, fused=True, **kw)
        except (RuntimeError, TypeError) as exc:
            raise RecallCircuitsError(f"fused AdamW is not available here ({exc}); use optimizer_impl='foreach'"
                                      ) from exc
    return torch.optim.AdamW(params, foreach=True, **kw)


def _lr_lambda(total: int, warmup: int, schedule: str):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        frac = (step - warmup) / max(1, total - warmup)
        return max(0.0, 1 - frac) if schedule == "linear" else 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))
    return f


def _collate(items: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    ids, labels, mask = pad_batch(items, pad_id)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def enable_checkpointing(model: HFModel) -> None:
    """Recompute each layer's activations in the backward pass instead of keeping them (gradient checkpointing):
    ``activation_checkpointing_enable`` where transformers has it, the older name (deprecated since) before."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()


def token_loss_sum(model: HFModel, batch: dict[str, torch.Tensor], *, label_rows_only: bool = False,
                   rows: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """Sum of next-token cross-entropy over label tokens (-100 = ignored), and the number of label tokens.

    ``label_rows_only``: the unembedding runs on the positions that predict a label only (for QA, the answer's few
    tokens of each row), from the base model's final hidden states; the same loss when the model's logits are the
    output embedding of those states (:func:`label_rows_exact` checks it), and it needs the plain model, not a DDP
    wrapper. ``rows``: those positions as flat indices into ``[batch, pos - 1]`` (:func:`label_rows`), computed
    where the labels are (on the host): given, nothing here waits for the device."""
    tgt = batch["labels"][:, 1:]
    if label_rows_only:
        hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
        if rows is None:
            rows = label_rows(tgt)
        flat = hidden[:, :-1].reshape(-1, hidden.shape[-1]).index_select(0, rows)
        logits = model.get_output_embeddings()(flat)
        loss = torch.nn.functional.cross_entropy(logits.float(), tgt.reshape(-1).index_select(0, rows),
                                                 reduction="sum")
        return loss, int(rows.numel())
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), tgt.reshape(-1),
                                             ignore_index=-100, reduction="sum")
    return loss, int((tgt != -100).sum()) if rows is None else int(rows.numel())


def label_rows(tgt: torch.Tensor) -> torch.Tensor:
    """The flat indices of the label positions (not -100) of next-token targets ``tgt`` [batch, pos - 1]."""
    return (tgt.reshape(-1) != -100).nonzero().squeeze(1)


def label_rows_exact(model: HFModel, batch: dict[str, torch.Tensor]) -> bool:
    """Whether :func:`token_loss_sum` gives the same loss with ``label_rows_only`` on this model (no final logit
    scaling or soft-capping outside the output embedding), checked on one batch in eval mode (no dropout)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            full, n = token_loss_sum(model, batch)
            rows, m = token_loss_sum(model, batch, label_rows_only=True)
    except (AttributeError, TypeError, RuntimeError):
        return False
    finally:
        model.train(was_training)
    return n == m and bool(torch.allclose(full, rows, rtol=1e-5, atol=1e-6))


def tokenize_dataset(tokenizer: Tokenizer, ds: Dataset) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    bio = [tokenize_bio(tokenizer, e) for e in ds.bio()]
    qa = [tokenize_qa(tokenizer, e) for e in ds.qa("id")]
    return bio, qa


def _save_checkpoint(path: Path, model: HFModel, opt: Any | None, sched: Any | None, state: dict[str, Any]) -> None:
    """Model weights, optimiser + scheduler state (absent at a phase boundary: the next phase starts fresh), RNG."""
    raw: Any = model.module if hasattr(model, "module") else model
    with atomic_dir(path) as tmp:
        save_file({k: v.detach().clone().contiguous() for k, v in raw.state_dict().items()},
                  str(tmp / CHECKPOINT_WEIGHTS))
        if opt is not None and sched is not None:
            torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, tmp / CHECKPOINT_OPTIMIZER)
        save_file({"torch_rng": torch.get_rng_state()}, str(tmp / CHECKPOINT_RNG))
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))


def _load_checkpoint(path: Path, model: HFModel, opt: Any, sched: Any) -> None:
    raw: Any = model.module if hasattr(model, "module") else model
    sd = load_file(str(path / CHECKPOINT_WEIGHTS))
    raw.load_state_dict(sd, strict=False)
    if (path / CHECKPOINT_OPTIMIZER).is_file():
        blob = torch.load(path / CHECKPOINT_OPTIMIZER, weights_only=True)
        opt.load_state_dict(blob["optimizer"])
        sched.load_state_dict(blob["scheduler"])
    torch.set_rng_state(load_file(str(path / CHECKPOINT_RNG))["torch_rng"])


def trained(out: Path) -> bool:
    """Whether the run in ``out`` finished training (its final model is saved with the run's metadata)."""
    return (out / "model" / TRAIN_META).is_file()


def _prepare_out(out: Path, resume: bool, overwrite: bool, identity: dict[str, Any]) -> dict[str, Any] | None:
    """Refuse an existing run directory unless resume/overwrite; return the saved trainer state when resuming.

    With ``resume``, a finished run is returned as is and an interrupted one continues from its checkpoint, both
    only if it was started from the same ``identity`` (model, data, options); a run interrupted before its first
    checkpoint starts again from the beginning."""
    ckpt = out / CHECKPOINT_DIR
    if out.exists() and not out.is_dir():
        raise RecallCircuitsError(f"{out} is a file, not a run directory")
    if out.exists() and any(out.iterdir()):
        if resume:
            if (out / TRAIN_META).is_file():
                check_same(read_json(out / TRAIN_META).get("identity"), identity, out)
            if trained(out):
                return {"finished": True}
            if (ckpt / STATE_FILE).is_file():
                return read_json(ckpt / STATE_FILE)
            log.info("%s has no checkpoint yet: fine-tuning starts from the beginning", out)
        elif not overwrite:
            raise RecallCircuitsError(f"checkpoint directory {out} exists (pass --resume or --overwrite)")
        if is_main():
            shutil.rmtree(out)
    if is_main():
        out.mkdir(parents=True, exist_ok=True)
    return None


def _save_model(model: HFModel, tok: Tokenizer, dest: Path) -> None:
    """``save_pretrained`` through :func:`~recall_circuits.artefacts.atomic_dir`: ``dest`` is complete or absent."""
    with atomic_dir(dest) as tmp, offline_and_quiet():
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)


# Fields that do not change what is trained (where it goes, how it is evaluated, how often it is saved), and the
# model and data, which are identified by their content instead of their paths.
_NOT_IDENTITY = ("model", "data", "out", "device", "eval_batch_size", "checkpoint_every", "snapshot_every",
                 "optimizer_impl", "log_every")


# options recorded in a run's identity only when on (a run made before they existed has the same identity)
_SAID_WHEN_ON = ("length_buckets", "compile")


def train_identity(cfg: TrainConfig, model_dir: Path, base_identity: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """What a fine-tuning run is computed from: the base model's weights (``base_identity`` when the caller has
    already hashed them), the data, the options."""
    return {"base_model": base_identity or model_identity(model_dir), "data": data_identity(cfg.data),
            "options": {k: v for k, v in cfg.to_dict().items()
                        if k not in _NOT_IDENTITY and not (k in _SAID_WHEN_ON and not v)}}


def _resume_point(cfg: TrainConfig, out: Path, resume: bool, overwrite: bool, identity: dict[str, Any],
                  rank: int, world: int) -> dict[str, Any] | None:
    """The run folder checked (or cleared) and the saved state to resume from; the metrics logged after that
    state's checkpoint are dropped."""
    saved = _prepare_out(out, resume, overwrite, identity)
    if world > 1:
        dist.barrier()
    if saved and not saved.get("finished") and rank == 0 and (out / METRICS_FILE).is_file():
        lines = (out / METRICS_FILE).read_text().splitlines()
        keep = [ln for ln in lines if json.loads(ln)["step"] <= saved["global_step"]]
        (out / METRICS_FILE).write_text("".join(ln + "\n" for ln in keep))
    return saved


def _load_model(cfg: TrainConfig, model_dir: Path, examples: list[dict[str, Any]]) -> HFModel:
    """The base model, checked against the tokenised data, on the device, ready to train (checkpointing, frozen
    embeddings, compilation as the config says)."""
    from transformers import AutoModelForCausalLM  # noqa: PLC0415  (transformers loads only when a model does)

    max_len = max(len(t["input_ids"]) for t in examples)
    torch.manual_seed(cfg.seed)
    with offline_and_quiet():
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=parse_dtype("float32"),
                                                     attn_implementation="eager")
    n_pos = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    if n_pos is not None and max_len > n_pos:
        raise RecallCircuitsError(f"the data has sequences of {max_len} tokens, the model takes at most {n_pos}")
    if max(max(t["input_ids"]) for t in examples) >= model.config.vocab_size:
        raise RecallCircuitsError("the tokenizer produces ids outside the model's vocabulary")
    cast(Any, model).to(cfg.device)      # (transformers' typing of .to misleads mypy)
    if cfg.gradient_checkpointing:
        enable_checkpointing(model)
    if cfg.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    if cfg.compile:
        model.base_model.compile(dynamic=True)   # in place (the state dict keeps its names), one graph for all lengths
    model.train()
    return model


class _Trainer:
    """One fine-tuning run's state while it trains: the model (and its DDP wrapper), the data, the step count, the
    losses not yet logged; one method per part of a step."""

    def __init__(self, cfg: TrainConfig, out: Path, model: HFModel, tok: Tokenizer, data: dict[str, list[Any]],
                 rank: int, world: int, saved: dict[str, Any] | None, total_steps: int, verbose: bool) -> None:
        self.cfg, self.out, self.model, self.tok, self.data = cfg, out, model, tok, data
        self.rank, self.world = rank, world
        self.ddp: Any = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
        # the unembedding at label positions only (QA: a few rows of each) where that is the same loss; DDP needs
        # the wrapper's own forward, so multi-process runs compute every position's logits
        self.rows_only = world == 1 and label_rows_exact(
            model, {k: v.to(cfg.device) for k, v in _collate(data["qa"][:4], tok.pad_token_id).items()})
        log.info("loss: the unembedding runs at %s", "label positions only" if self.rows_only else "every position")
        self.global_done = saved["global_step"] if saved else 0
        self.t0 = time.time() - (saved["elapsed_s"] if saved else 0.0)
        self.micro = cfg.batch_size // cfg.grad_accum // world if world > 1 else cfg.batch_size // cfg.grad_accum
        if world > 1 and cfg.batch_size % (cfg.grad_accum * world):
            raise RecallCircuitsError(f"batch_size {cfg.batch_size} must be divisible by grad_accum*world_size")
        self.bar = tqdm(total=total_steps, initial=self.global_done, disable=not verbose or rank != 0,
                        desc=cfg.strategy)
        self.pending: list[tuple[dict[str, Any], list[torch.Tensor], float]] = []   # steps not yet logged

    def step(self, batch_items: list[tuple[str, int]], opt: torch.optim.Optimizer, sched: Any, phase: Phase,
             si: int) -> None:
        """One optimiser step on a batch (step ``si`` of ``phase``): micro-batches (this process's share), the loss
        normalised by the label tokens of the whole batch, clipping, the step; its metrics line waits in
        ``pending`` until its loss is read back (:func:`_flush`)."""
        cfg, world = self.cfg, self.world
        mine = batch_items[self.rank::world]
        micro_batches = [mine[i:i + self.micro] for i in range(0, len(mine), self.micro)] or [[]]
        collated = [_collate([self.data[f][j] for f, j in mb], self.tok.pad_token_id) for mb in micro_batches if mb]
        n_tok = torch.tensor(sum(int((c["labels"][:, 1:] != -100).sum()) for c in collated), dtype=torch.float64)
        if world > 1:
            dist.all_reduce(n_tok)
        sums = []
        for k, c in enumerate(collated):
            rows = _to(label_rows(c["labels"][:, 1:]), cfg.device)      # found on the host: no wait
            c = {key: _to(v, cfg.device) for key, v in c.items()}
            ctx = self.ddp.no_sync() if (world > 1 and k != len(collated) - 1) else _null()
            with ctx, torch.autocast(device_type=torch.device(cfg.device).type, dtype=torch.bfloat16,
                                     enabled=cfg.bf16):
                s, _ = token_loss_sum(self.ddp, c, label_rows_only=self.rows_only, rows=rows)
                loss = s * world / n_tok.item()
                loss.backward()
            sums.append(s.detach())
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        self.global_done += 1
        self.bar.update(1)
        self.pending.append(({"step": self.global_done, "phase": phase.name, "phase_step": si + 1,
                              "format": batch_items[0][0], "loss": None, "lr": sched.get_last_lr()[0],
                              "elapsed_s": time.time() - self.t0}, sums, max(1.0, n_tok.item() / world)))

    def state(self, pi: int, step: int) -> dict[str, Any]:
        return {"phase": pi, "step": step, "global_step": self.global_done, "elapsed_s": time.time() - self.t0}

    def after_step(self, pi: int, phase: Phase, si: int, n_steps: int, opt: Any, sched: Any,
                   stop_after_steps: int | None) -> bool:
        """Log, snapshot and checkpoint as the config says; True when ``stop_after_steps`` stops the run here."""
        cfg = self.cfg
        done_phase = si + 1 == n_steps
        due = bool(cfg.checkpoint_every) and (si + 1) % cfg.checkpoint_every == 0
        stop = stop_after_steps is not None and self.global_done >= stop_after_steps
        if len(self.pending) >= cfg.log_every or done_phase or due or stop:
            _flush(self.pending, self.out / METRICS_FILE if self.rank == 0 else None, self.bar)
        if cfg.snapshot_every and self.global_done % cfg.snapshot_every == 0 and self.rank == 0:
            (self.out / SNAPSHOTS_DIR).mkdir(exist_ok=True)
            _save_model(self.model, self.tok, self.out / SNAPSHOTS_DIR / f"step-{self.global_done:06d}")
        if not done_phase and (due or stop) and self.rank == 0:
            _save_checkpoint(self.out / CHECKPOINT_DIR, self.model, opt, sched, self.state(pi, si + 1))
        return stop and not done_phase

    def run_phase(self, pi: int, phase: Phase, first: int, saved: dict[str, Any] | None,
                  lengths: dict[str, list[int]] | None, stop_after_steps: int | None) -> bool:
        """The phase's steps from ``first`` (its optimiser and schedule restored from the checkpoint when
        ``saved``); True when the run stopped inside it."""
        cfg = self.cfg
        per_epoch = [epoch_batches(phase, e, cfg.batch_size, cfg.seed, lengths) for e in range(phase.epochs)]
        steps = [b for ep in per_epoch for b in ep]
        opt = _adamw([p for p in self.model.parameters() if p.requires_grad], phase.lr, cfg)
        warm = max(1, int(cfg.warmup_frac * len(steps)))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(len(steps), warm, cfg.schedule))
        if saved:
            _load_checkpoint(self.out / CHECKPOINT_DIR, self.model, opt, sched)
        for si in range(first, len(steps)):
            self.step(steps[si], opt, sched, phase, si)
            if self.after_step(pi, phase, si, len(steps), opt, sched, stop_after_steps):
                return True
        return False

    def end_phase(self, pi: int, phase: Phase, n_phases: int) -> None:
        """The phase's model saved (two-stage's BIO phase as ``after_bio``); the next phase starts from a checkpoint
        of it with a fresh optimiser."""
        if self.rank == 0:
            dest = self.out / ("after_bio" if (self.cfg.strategy == "two-stage" and phase.name == "bio") else "model")
            _save_model(self.model, self.tok, dest)
            if pi + 1 < n_phases:
                _save_checkpoint(self.out / CHECKPOINT_DIR, self.model, None, None, self.state(pi + 1, 0))

    def finish(self) -> None:
        """The run's wall time and steps recorded; ``model/recall_circuits_train.json`` written last marks it
        finished; the checkpoint removed."""
        self.bar.close()
        if self.rank == 0:
            meta = read_json(self.out / TRAIN_META)
            meta["wall_s"] = time.time() - self.t0
            meta["steps"] = self.global_done
            write_json(self.out / TRAIN_META, meta, indent=2)
            write_json(self.out / "model" / TRAIN_META, meta, indent=2)   # last: marks the run finished
            if (self.out / CHECKPOINT_DIR).exists():
                shutil.rmtree(self.out / CHECKPOINT_DIR)


def train(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False, verbose: bool = True,
          stop_after_steps: int | None = None) -> Path:
    """Fine-tune ``cfg.model`` on ``cfg.data`` with ``cfg.strategy``; return the directory of the final model.

    Writes ``out/model`` (``save_pretrained``), for two-stage also ``out/after_bio``, ``out/metrics.jsonl`` and
    ``out/checkpoint`` (removed at the end). ``stop_after_steps`` simulates an interruption (tests).
    """
    rank, world = _world()
    out = Path(cfg.out)
    model_dir = resolve_model(cfg.model)
    identity = train_identity(cfg, model_dir)
    saved = _resume_point(cfg, out, resume, overwrite, identity, rank, world)
    if saved and saved.get("finished"):
        log.info("%s is already complete", out)
        return out / "model"
    ds = load_dataset(cfg.data)
    if not ds.qa("id"):
        raise RecallCircuitsError(f"{cfg.data} has no QA examples of ID people")
    tok = load_tokenizer(model_dir)
    bio_t, qa_t = tokenize_dataset(tok, ds)
    model = _load_model(cfg, model_dir, bio_t + qa_t)
    data = {"bio": bio_t, "qa": qa_t}
    phases = build_phases(cfg, len(bio_t), len(qa_t))
    lengths = {f: [len(t["input_ids"]) for t in data[f]] for f in data} if cfg.length_buckets else None
    total_steps = sum(len(epoch_batches(p, 0, cfg.batch_size, cfg.seed)) * p.epochs for p in phases)
    if rank == 0:
        write_json(out / TRAIN_META, {"base_model": cfg.model, "base_dir": str(model_dir), "config": cfg.to_dict(),
                                      "identity": identity, "world_size": world, "total_steps": total_steps},
                   indent=2)
    trainer = _Trainer(cfg, out, model, tok, data, rank, world, saved, total_steps, verbose)
    start_phase, start_step = (saved["phase"], saved["step"]) if saved else (0, 0)
    for pi in range(start_phase, len(phases)):
        resumed = bool(saved) and pi == start_phase
        if trainer.run_phase(pi, phases[pi], start_step if resumed else 0, saved if resumed else None, lengths,
                             stop_after_steps):
            trainer.bar.close()
            return out / CHECKPOINT_DIR
        trainer.end_phase(pi, phases[pi], len(phases))
        if stop_after_steps is not None and trainer.global_done >= stop_after_steps and pi + 1 < len(phases):
            trainer.bar.close()
            return out / CHECKPOINT_DIR
    trainer.finish()
    return out / "model"


def _to(t: torch.Tensor, device: str) -> torch.Tensor:
    """A batch tensor on the training device (to a GPU from pinned memory, without waiting for the copy)."""
    if torch.device(device).type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _flush(pending: list[tuple[dict[str, Any], list[torch.Tensor], float]], metrics: Path | None, bar: Any) -> None:
    """Read the pending steps' losses back to the host at once (one synchronisation) and log one line per step:
    each step's loss is its micro-batches' loss sums added in order, over its label tokens (per process)."""
    if not pending:
        return
    flat = torch.stack([s for _, sums, _ in pending for s in sums]).float().cpu().tolist()
    lines, i, loss = [], 0, 0.0
    for rec, sums, n in pending:
        total = 0.0
        for v in flat[i:i + len(sums)]:
            total += v
        i += len(sums)
        loss = total / n
        lines.append(json.dumps(rec | {"loss": loss}) + "\n")
    if metrics is not None:
        with open(metrics, "a") as f:
            f.write("".join(lines))
    bar.set_postfix(phase=pending[-1][0]["phase"], loss=f"{loss:.3f}")
    pending.clear()


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: Any) -> None:
        return None
