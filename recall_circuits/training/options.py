"""The fine-tuning options of ``analyses/finetune.py`` and what they make: a ``TrainConfig``'s fields.

One grammar for every caller that fine-tunes from options: ``analyses/finetune.py`` (its command line) and the
regime search (``analyses/regime_search.py``: each arm of a pair is a list of these options). Light: no torch
import.

    from recall_circuits.training.options import config_from_options
    cfg = config_from_options(["--strategy", "mixed", "--data", "D", "--out", "O", "--epochs", "20"])
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from recall_circuits.cli import add_device_args
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.training.presets import TRAIN_PRESETS, train_preset

# the preset's value is the default of each of these
OVERRIDES = (
    ("epochs", int, "epochs: mixed's passes, or two-stage's QA-phase passes"),
    ("bio-epochs", int, "two-stage's BIO-phase passes (default: --epochs)"),
    ("lr", float, "peak learning rate"),
    ("qa-lr", float, "two-stage's QA-phase learning rate (default: --lr)"),
    ("batch-size", int, "examples per optimiser step (per process under torchrun)"),
    ("grad-accum", int, "micro-batches accumulated per optimiser step"),
    ("seed", int, "seed of the order of examples and of dropout"),
    ("checkpoint-every", int, "optimiser steps between resumable checkpoints (0: none)"),
    ("snapshot-every", int, "optimiser steps between saved model snapshots (0: none)"),
    ("warmup-frac", float, "share of each phase's steps spent warming the learning rate up"),
    ("weight-decay", float, "AdamW weight decay"),
    ("mix-bio-repeat", int, "mixed: copies of each biography per epoch"),
    ("mix-qa-repeat", int, "mixed: copies of each ID question per epoch"),
    ("log-every", int, "steps between reading the loss back from the device (metrics.jsonl still has every step)"),
)
# the options that, when given, replace the preset's value of the TrainConfig field of the same name
_FIELDS = tuple(name.replace("-", "_") for name, _, _ in OVERRIDES) + (
    "model", "schedule", "device", "bf16", "gradient_checkpointing", "freeze_embeddings", "length_buckets", "compile")


def add_finetune_args(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the options that say what is fine-tuned, on what and how (every one but ``--strategy``, ``--data`` and
    ``--out`` defaults to the preset's value)."""
    ap.add_argument("--strategy", required=True, choices=["two-stage", "mixed"], help="the training recipe")
    ap.add_argument("--data", required=True, help="dataset directory (analyses/make_data.py)")
    ap.add_argument("--out", required=True, help="run directory: the fine-tuned model, metrics and results")
    ap.add_argument("--preset", default="cpu", choices=sorted(TRAIN_PRESETS),
                    help="the settings the options below override")
    ap.add_argument("--model", help="base model: registry name or checkpoint directory (default: the preset's)")
    for name, typ, text in OVERRIDES:
        ap.add_argument(f"--{name}", type=typ, help=f"{text} (default: the preset's)")
    ap.add_argument("--schedule", choices=["linear", "cosine", "constant"],
                    help="learning-rate schedule after the warm-up, per phase (default: the preset's)")
    ap.add_argument("--freeze-embeddings", action=argparse.BooleanOptionalAction, default=None,
                    help="keep the input embedding (tied to the unembedding where the model ties them) at its "
                         "pretrained value (default: the preset's)")
    # training's dtype is a compute dtype: bfloat16 autocasts the forward and backward, weights and optimiser stay
    # float32; both default to the preset's
    add_device_args(ap, device=None, dtype=None, dtypes=("float32", "bfloat16"))
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                    help="the same as --dtype bfloat16 (default: the preset's, where the device computes bfloat16 "
                         "natively)")
    ap.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                    help="recompute activations in the backward pass to save memory (default: the preset's)")
    ap.add_argument("--length-buckets", action=argparse.BooleanOptionalAction, default=None,
                    help="batches of examples of similar length: less padding, another order of examples (default: "
                         "the preset's)")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="run the model through torch.compile (default: the preset's)")
    return ap


def train_config(args: argparse.Namespace) -> dict[str, Any]:
    """The ``TrainConfig`` fields these options give: the preset's, overridden by every option given."""
    bf16 = args.bf16 if args.dtype is None else args.dtype == "bfloat16"       # the user's choice, if any
    cfg = train_preset(args.preset, args.device, bf16)    # else bfloat16 only where the device computes it natively
    for key in _FIELDS:
        val = getattr(args, key)
        if val is not None:
            cfg[key] = val
    if bf16 is not None:         # --dtype over --bf16, as given
        cfg["bf16"] = bf16
    return cfg | {"strategy": args.strategy, "data": args.data, "out": args.out}


class _Raising(argparse.ArgumentParser):
    def error(self, message: str):  # noqa: D102 - a library call raises, it does not exit
        raise RecallCircuitsError(f"fine-tuning options: {message}")


def config_from_options(argv: Sequence[str]) -> dict[str, Any]:
    """``train_config`` of a list of ``analyses/finetune.py`` options (a bad option raises
    :class:`~recall_circuits.errors.RecallCircuitsError`)."""
    return train_config(add_finetune_args(_Raising(add_help=False)).parse_args(list(argv)))
