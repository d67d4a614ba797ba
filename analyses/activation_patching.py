"""Activation patching on bioS QA: same-format (corrupted subject) per head × position and per residual position,
attribution patching, and BIO→QA patching at role-aligned positions.

    python analyses/activation_patching.py --model runs/reproduce/mixed/model --data runs/reproduce/data \
        --out runs/patching/mixed --pairs 4
"""

from __future__ import annotations

import argparse
import logging

from recall_circuits.cli import HelpFormatter, add_device_args
from recall_circuits.errors import cli_entry

log = logging.getLogger("activation_patching")


@cli_entry
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--split", default="ood", choices=["id", "ood", "all"])
    ap.add_argument("--overwrite", action="store_true")
    add_device_args(ap)
    args = ap.parse_args(argv)
    from recall_circuits.patching import run_activation_patching

    run_activation_patching(args.model, args.data, args.out, n_pairs=args.pairs, split=args.split,
                            overwrite=args.overwrite, device=args.device, dtype=args.dtype)
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
