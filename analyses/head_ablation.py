"""Head ablation: restore the top-n heads of several rankings (Shared Size, Grafted Size, random) to their
pretrained weights and measure QA accuracy; and restore every head alone.

    python analyses/head_ablation.py --base smollm2-135m --finetuned runs/reproduce/mixed/model \
        --data runs/reproduce/data --trace-dir runs/reproduce/trace-mixed --graft-dir runs/reproduce/graft-mixed \
        --out runs/heads/mixed

Under GQA, restoring a query head restores the K/V of its whole KV group (the summary's gqa_note says so).
"""

from __future__ import annotations

import argparse
import logging

from recall_circuits.cli import HelpFormatter, add_device_args
from recall_circuits.errors import cli_entry

log = logging.getLogger("head_ablation")


@cli_entry
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--base", required=True)
    ap.add_argument("--finetuned", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--trace-dir", help="gradient-trace run: ranking by Shared Size")
    ap.add_argument("--graft-dir", help="grafting run: ranking by Grafted Size")
    ap.add_argument("--patching-dir", help="activation-patching run: ranking by attribution-patching score")
    ap.add_argument("--n-random", type=int, default=3)
    ap.add_argument("--grid", help="comma-separated numbers of heads, e.g. 0,1,2,4,8")
    ap.add_argument("--single-head", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--components", default="QKVO", help="which of Q, K, V, O a head restore covers")
    ap.add_argument("--max-eval-people", type=int)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--overwrite", action="store_true")
    add_device_args(ap)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    from recall_circuits.errors import RecallCircuitsError
    from recall_circuits.head_ablation import run_head_ablation

    try:
        grid = [int(x) for x in args.grid.split(",")] if args.grid else None
    except ValueError as exc:
        raise RecallCircuitsError(f"--grid must be comma-separated integers, got {args.grid!r}") from exc
    run_head_ablation(args.base, args.finetuned, args.data, args.out, trace_dir=args.trace_dir,
                      graft_dir=args.graft_dir, patching_dir=args.patching_dir, n_random=args.n_random, grid=grid, single=args.single_head,
                      components=tuple(args.components), max_people=args.max_eval_people,
                      batch_size=args.batch_size, overwrite=args.overwrite, verbose=not args.no_progress,
                      device=args.device, dtype=args.dtype)
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
