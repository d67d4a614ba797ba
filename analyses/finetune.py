"""Fine-tune a model two-stage or mixed on bioS data, then evaluate QA (ID/OOD) and BIO recall.

    python analyses/finetune.py --preset cpu --strategy mixed --data data/generated/cpu --out runs/finetune/mixed
    python analyses/finetune.py --model tiny-neox --preset tiny --strategy two-stage --data DIR --out DIR

Writes OUT/model (save_pretrained), OUT/after_bio (two-stage), OUT/metrics.jsonl and OUT/results.json.
Under torchrun the training runs DDP (gloo on CPU); evaluation runs on rank 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from recall_circuits.runs.cli import add_device_args, add_progress_arg, parser, script
from recall_circuits.training.presets import TRAIN_PRESETS, preset

log = logging.getLogger("finetune")
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
)


def build_parser() -> argparse.ArgumentParser:
    ap = parser(__doc__)
    ap.add_argument("--strategy", required=True, choices=["two-stage", "mixed"], help="the training recipe")
    ap.add_argument("--data", required=True, help="dataset directory (analyses/make_data.py)")
    ap.add_argument("--out", required=True, help="run directory: the fine-tuned model, metrics and results")
    ap.add_argument("--preset", default="cpu", choices=sorted(TRAIN_PRESETS), help="the settings the options below override")
    ap.add_argument("--model", help="base model: registry name or checkpoint directory (default: the preset's)")
    for name, typ, text in OVERRIDES:
        ap.add_argument(f"--{name}", type=typ, help=f"{text} (default: the preset's)")
    ap.add_argument("--schedule", choices=["linear", "cosine", "constant"],
                    help="learning-rate schedule after the warm-up, per phase (default: the preset's)")
    ap.add_argument("--freeze-embeddings", action=argparse.BooleanOptionalAction, default=None,
                    help="keep the input embedding (tied to the unembedding where the model ties them) at its "
                         "pretrained value")
    # training's dtype is a compute dtype: bfloat16 autocasts the forward and backward, weights and optimiser stay
    # float32; both default to the preset's
    add_device_args(ap, device=None, dtype=None, dtypes=("float32", "bfloat16"))
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None, help="the same as --dtype bfloat16")
    ap.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                    help="recompute activations in the backward pass to save memory (default: the preset's)")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    add_progress_arg(ap)
    return ap


def train_config(args: argparse.Namespace) -> dict:
    """The ``TrainConfig`` fields these options give: the preset's, overridden by every option given."""
    cfg = preset(TRAIN_PRESETS, args.preset)
    for key in ("model", "epochs", "bio_epochs", "lr", "qa_lr", "batch_size", "grad_accum", "seed", "checkpoint_every",
                "snapshot_every", "warmup_frac", "weight_decay", "mix_bio_repeat", "mix_qa_repeat", "schedule", "device",
                "bf16", "gradient_checkpointing", "freeze_embeddings"):
        val = getattr(args, key)
        if val is not None:
            cfg[key] = val
    if args.dtype is not None:
        cfg["bf16"] = args.dtype == "bfloat16"
    return cfg | {"strategy": args.strategy, "data": args.data, "out": args.out}


@script(build_parser)
def main(args: argparse.Namespace) -> int:
    from recall_circuits.training.run import run_finetune  # heavy imports after argument errors

    results = run_finetune(train_config(args), resume=args.resume, overwrite=args.overwrite, verbose=args.progress)
    if results is not None and int(os.environ.get("RANK", "0")) == 0:
        log.info("results: %s", json.dumps({k: v for k, v in results.items() if isinstance(v, (int, float))}))
        log.info("wrote %s", Path(args.out) / "results.json")
    return 0


if __name__ == "__main__":
    from recall_circuits.training.parallel import exit_process

    exit_process(main())
