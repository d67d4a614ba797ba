"""Cross-task gradient trace: shared parameters between BIO and QA, where they live, and what restoring them does.

    python analyses/gradient_trace.py --base smollm2-135m --finetuned runs/reproduce/mixed/model \
        --data runs/reproduce/data --out runs/trace/mixed

Writes OUT/config.json, OUT/result.safetensors (shared-set indices, top-k indices, per-head and per-neuron
tables), OUT/summary.json (k, shared_fraction, chance_fraction, curve, top10pct_head_share, ablation) and
OUT/figures/{shared_curve,head_heatmap}.html. Under ``torchrun --nproc_per_node N`` the N processes share the
trace's examples (gloo on CPU, NCCL on GPUs); the first writes the run directory and runs the ablation.
"""

from __future__ import annotations

import argparse
import logging

from recall_circuits.cli import HelpFormatter, add_device_args
from recall_circuits.errors import cli_entry

log = logging.getLogger("gradient_trace")


@cli_entry
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--base", required=True, help="pretrained model: registry name or checkpoint directory")
    ap.add_argument("--finetuned", required=True, help="fine-tuned checkpoint directory")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--n-people", type=int, default=20)
    ap.add_argument("--split", default="id", choices=["id", "ood", "all"])
    ap.add_argument("--mode", default="sum_abs", help="sum_abs | abs_of_sum | sq_sum")
    ap.add_argument("--bio-loss", default="all", choices=["all", "attribute"])
    ap.add_argument("--scale", default=None, choices=["movement", "weight"])
    ap.add_argument("--k", type=int, help="size of Top_k (default: --k-frac of P)")
    ap.add_argument("--k-frac", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=8, help="examples per forward and backward")
    ap.add_argument("--pack", type=int, default=4, help="examples per packed row (0: padded batches)")
    ap.add_argument("--ablation", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--n-random", type=int, default=1)
    ap.add_argument("--max-eval-people", type=int)
    ap.add_argument("--restore-mask", action="append", default=[], help="mask file to restore too (repeatable)")
    ap.add_argument("--save-influence", action="store_true", help="also save the two full influence vectors")
    add_device_args(ap)
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    from recall_circuits.trace import TraceConfig
    from recall_circuits.trace_run import TraceRunConfig, run_gradient_trace

    tcfg = TraceConfig(n_people=args.n_people, split=args.split, mode=args.mode, bio_loss=args.bio_loss,
                       scale=args.scale, batch_size=args.batch_size,
                       pack=args.pack or None)
    cfg = TraceRunConfig(base=args.base, finetuned=args.finetuned, data=args.data, out=args.out, trace=tcfg, k=args.k,
                         k_frac=args.k_frac, ablation=args.ablation, n_random=args.n_random,
                         max_eval_people=args.max_eval_people, save_influence=args.save_influence,
                         restore_masks=tuple(args.restore_mask),
                         device=args.device, dtype=args.dtype)
    if run_gradient_trace(cfg, overwrite=args.overwrite, verbose=not args.no_progress) is not None:
        log.info("wrote %s", args.out)   # (under torchrun, by the first process)
    return 0


if __name__ == "__main__":
    from recall_circuits.parallel import exit_process

    exit_process(main())
