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

from recall_circuits.cli import add_progress_arg, parser, script
from recall_circuits.training.options import add_finetune_args, train_config

log = logging.getLogger("finetune")


def build_parser() -> argparse.ArgumentParser:
    ap = add_finetune_args(parser(__doc__))
    ap.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    add_progress_arg(ap)
    return ap


@script(build_parser)
def main(args: argparse.Namespace) -> int:
    from recall_circuits.runs.stages.finetune import run_finetune  # heavy imports after argument errors

    results = run_finetune(train_config(args), resume=args.resume, overwrite=args.overwrite, verbose=args.progress)
    if results is not None and int(os.environ.get("RANK", "0")) == 0:
        log.info("results: %s", json.dumps({k: v for k, v in results.items() if isinstance(v, (int, float))}))
        log.info("wrote %s", Path(args.out) / "results.json")
    return 0


if __name__ == "__main__":
    from recall_circuits.training.parallel import exit_process

    exit_process(main())
