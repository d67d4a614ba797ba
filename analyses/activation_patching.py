r"""Activation patching on bioS QA: same-format (corrupted subject) per head × position and per residual position,
attribution patching, and BIO→QA patching at role-aligned positions.

    python analyses/activation_patching.py --model runs/reproduce/mixed/model --data runs/reproduce/data \
        --out runs/patching/mixed --pairs 4
"""

from __future__ import annotations

import argparse
import logging

from recall_circuits.cli import SPLITS, add_device_args, add_progress_arg, add_run_args, parser, script

log = logging.getLogger("activation_patching")


def build_parser() -> argparse.ArgumentParser:
    ap = parser(__doc__)
    ap.add_argument("--model", required=True, help="the model to patch: registry name or checkpoint directory")
    add_run_args(ap)
    ap.add_argument("--pairs", type=int, default=4, help="(clean, corrupted) QA prompt pairs")
    ap.add_argument("--split", default="ood", choices=SPLITS, help="whose questions: ID, OOD or all people")
    add_device_args(ap)
    add_progress_arg(ap)
    return ap


@script(build_parser)
def main(args: argparse.Namespace) -> int:
    from recall_circuits.runs.stages.patching import PatchingConfig, run

    run(PatchingConfig(args.model, args.data, args.out, n_pairs=args.pairs, split=args.split, overwrite=args.overwrite,
                       verbose=args.progress, device=args.device, dtype=args.dtype))
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
