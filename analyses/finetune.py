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

from recall_circuits.cli import HelpFormatter
from recall_circuits.errors import cli_entry
from recall_circuits.presets import TRAIN_PRESETS, preset

log = logging.getLogger("finetune")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--strategy", required=True, help="two-stage or mixed")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", default="cpu", help=f"one of {sorted(TRAIN_PRESETS)}")
    ap.add_argument("--model", help="registry name or checkpoint directory (default: the preset's)")
    for name, typ in (("epochs", int), ("bio-epochs", int), ("lr", float), ("qa-lr", float), ("batch-size", int),
                      ("grad-accum", int), ("seed", int), ("checkpoint-every", int), ("snapshot-every", int),
                      ("warmup-frac", float), ("weight-decay", float), ("mix-bio-repeat", int), ("mix-qa-repeat", int)):
        ap.add_argument(f"--{name}", type=typ)
    ap.add_argument("--schedule", choices=["linear", "cosine", "constant"])
    ap.add_argument("--freeze-embeddings", action=argparse.BooleanOptionalAction, default=None,
                    help="keep the input embedding (tied to the unembedding where the model ties them) at its "
                         "pretrained value")
    ap.add_argument("--device", help="torch device (default: the preset's)")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"],
                    help="compute dtype: bfloat16 autocasts the forward and backward, weights and optimiser stay "
                         "float32 (default: the preset's)")
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None, help="the same as --dtype bfloat16")
    ap.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    ap.add_argument("--no-progress", action="store_true")
    return ap.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from recall_circuits.finetune_run import run_finetune  # heavy imports after argument errors

    cfg = preset(TRAIN_PRESETS, args.preset)
    for key in ("model", "epochs", "bio_epochs", "lr", "qa_lr", "batch_size", "grad_accum", "seed", "checkpoint_every",
                "snapshot_every", "warmup_frac", "weight_decay", "mix_bio_repeat", "mix_qa_repeat", "schedule", "device", "bf16",
                "gradient_checkpointing", "freeze_embeddings"):
        val = getattr(args, key)
        if val is not None:
            cfg[key] = val
    if args.dtype is not None:
        cfg["bf16"] = args.dtype == "bfloat16"
    results = run_finetune(cfg | {"strategy": args.strategy, "data": args.data, "out": args.out},
                           resume=args.resume, overwrite=args.overwrite, verbose=not args.no_progress)
    if results is not None and int(os.environ.get("RANK", "0")) == 0:
        log.info("results: %s", json.dumps({k: v for k, v in results.items() if isinstance(v, (int, float))}))
        log.info("wrote %s", Path(args.out) / "results.json")
    return 0


if __name__ == "__main__":
    from recall_circuits.parallel import exit_process

    exit_process(main())
