r"""Model grafting: the sparse set of fine-tuning updates that carries QA, and how much of it is shared.

    python analyses/grafting.py --base smollm2-135m --finetuned runs/reproduce/mixed/model \
        --data runs/reproduce/data --trace-dir runs/reproduce/trace-mixed --out runs/graft/mixed

Writes OUT/config.json, OUT/graft_mask.safetensors, OUT/result.safetensors (grafted_per_head), OUT/summary.json
(alpha, grafted accuracy ID/OOD, share of S inside the graft, accuracy lost without S) and OUT/figures/.
"""

from __future__ import annotations

import argparse
import logging

from recall_circuits.cli import add_device_args, add_pair_args, add_progress_arg, add_run_args, parser, script

log = logging.getLogger("grafting")


def build_parser() -> argparse.ArgumentParser:
    ap = parser(__doc__)
    add_pair_args(ap)
    add_run_args(ap)
    ap.add_argument("--trace-dir", help="gradient-trace run directory: its shared set S is compared with the graft")
    ap.add_argument("--init-mask", help="mask file to start from (default: top --init-frac of |θ_ft − θ_pre|)")
    ap.add_argument("--init-frac", type=float, default=1e-3, help="share of parameters in the initial graft")
    ap.add_argument("--steps", type=int, default=40, help="optimisation steps of the graft's mask")
    ap.add_argument("--lr", type=float, default=0.5, help="learning rate of the mask's logits")
    ap.add_argument("--batch-size", type=int, default=16, help="questions per step")
    ap.add_argument("--eval-every", type=int, default=10, help="steps between evaluations of the graft")
    ap.add_argument("--sparsity", type=float, default=0.0, help="weight of the mask-size penalty")
    ap.add_argument("--seed", type=int, default=0, help="seed of the batches")
    add_device_args(ap)
    add_progress_arg(ap)
    return ap


@script(build_parser)
def main(args: argparse.Namespace) -> int:
    from recall_circuits.interventions.grafting import GraftConfig
    from recall_circuits.runs.stages.graft import GraftStageConfig, run

    graft = GraftConfig(init_frac=args.init_frac, steps=args.steps, lr=args.lr, batch_size=args.batch_size,
                        eval_every=args.eval_every, sparsity=args.sparsity, seed=args.seed)
    run(GraftStageConfig(args.base, args.finetuned, args.data, args.out, graft, trace_dir=args.trace_dir,
                         init_mask_file=args.init_mask, overwrite=args.overwrite, verbose=args.progress,
                         device=args.device, dtype=args.dtype))
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
