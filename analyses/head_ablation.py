r"""Head ablation: restore the top-n heads of several rankings (Shared Size, Grafted Size, random) to their
pretrained weights and measure QA accuracy; and restore every head alone.

    python analyses/head_ablation.py --base smollm2-135m --finetuned runs/reproduce/mixed/model \
        --data runs/reproduce/data --trace-dir runs/reproduce/trace-mixed --graft-dir runs/reproduce/graft-mixed \
        --out runs/heads/mixed

Under GQA, restoring a query head restores the K/V of its whole KV group (the summary's gqa_note says so).
"""

from __future__ import annotations

import argparse
import logging

from recall_circuits.cli import (
    add_device_args,
    add_pair_args,
    add_progress_arg,
    add_run_args,
    comma_list,
    parser,
    script,
)

log = logging.getLogger("head_ablation")
COMPONENTS = ("Q", "K", "V", "O")


def _component(text: str) -> str:
    if text not in COMPONENTS:
        raise ValueError(text)
    return text


def build_parser() -> argparse.ArgumentParser:
    ap = parser(__doc__)
    add_pair_args(ap)
    add_run_args(ap)
    ap.add_argument("--trace-dir", help="gradient-trace run: ranking by Shared Size")
    ap.add_argument("--graft-dir", help="grafting run: ranking by Grafted Size")
    ap.add_argument("--patching-dir", help="activation-patching run: ranking by attribution-patching score")
    ap.add_argument("--n-random", type=int, default=3, help="random head rankings restored as controls")
    ap.add_argument("--grid", type=comma_list(int, "numbers of heads"),
                    help="comma-separated numbers of heads restored, e.g. 0,1,2,4,8 (default: powers of two)")
    ap.add_argument("--single-head", action=argparse.BooleanOptionalAction, default=True,
                    help="also restore every head alone")
    ap.add_argument("--components", type=comma_list(_component, "components among Q,K,V,O"),
                    default=list(COMPONENTS), help="comma-separated parts of a head a restore covers, e.g. Q,K")
    ap.add_argument("--eval-people", type=int, help="people scored after each restore (default: all)")
    ap.add_argument("--batch-size", type=int, default=32, help="questions per evaluation batch")
    add_device_args(ap)
    add_progress_arg(ap)
    return ap


@script(build_parser)
def main(args: argparse.Namespace) -> int:
    from recall_circuits.runs.stages.heads import HeadsConfig, run

    run(HeadsConfig(args.base, args.finetuned, args.data, args.out, trace_dir=args.trace_dir, graft_dir=args.graft_dir,
                    patching_dir=args.patching_dir, n_random=args.n_random, grid=args.grid, single=args.single_head,
                    components=tuple(args.components), max_people=args.eval_people, batch_size=args.batch_size,
                    overwrite=args.overwrite, verbose=args.progress, device=args.device, dtype=args.dtype))
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
