r"""Cross-task gradient trace: shared parameters between BIO and QA, where they live, and what restoring them does.

    python analyses/gradient_trace.py --base smollm2-135m --finetuned runs/reproduce/mixed/model \
        --data runs/reproduce/data --out runs/trace/mixed

Writes OUT/config.json, OUT/result.safetensors (shared-set indices, top-k indices, per-head and per-neuron
tables), OUT/summary.json (k, shared_fraction, chance_fraction, curve, the pretrained model's curve_pretrained and
shared_fraction_pretrained, top10pct_head_share, ablation) and
OUT/figures/{shared_curve,head_heatmap}.html. Under ``torchrun --nproc_per_node N`` the N processes share the
trace's examples (gloo on CPU, NCCL on GPUs); the first writes the run directory and runs the ablation.
"""

from __future__ import annotations

import argparse
import logging

from recall_circuits.cli import SPLITS, add_device_args, add_pair_args, add_progress_arg, add_run_args, parser, script

log = logging.getLogger("gradient_trace")


def build_parser() -> argparse.ArgumentParser:
    ap = parser(__doc__)
    add_pair_args(ap)
    add_run_args(ap)
    ap.add_argument("--people", type=int, default=None, help="people whose BIO and QA gradients are traced "
                    "(default: 20, or every person of the split where it has fewer; more than it has is an error)")
    ap.add_argument("--split", default="id", choices=SPLITS, help="which people are traced: ID, OOD or both")
    ap.add_argument("--mode", default="sum_abs", choices=["sum_abs", "abs_of_sum", "sq_sum"],
                    help="how per-example gradients accumulate into an influence")
    ap.add_argument("--bio-loss", default="all", choices=["all", "attribute"],
                    help="BIO loss on every token, or on the attribute values only")
    ap.add_argument("--scale", default=None, choices=["movement", "weight"],
                    help="multiply the influence by |θ_ft − θ_pre| or |θ|")
    ap.add_argument("--k", type=int, help="size of Top_k (default: --k-frac of P)")
    ap.add_argument("--k-frac", type=float, default=1e-3, help="size of Top_k as a fraction of the "
                    "parameters (the k the whole project uses)")
    ap.add_argument("--batch-size", type=int, default=8, help="examples per forward and backward")
    ap.add_argument("--pack", type=int, default=4, help="examples per packed row (0: padded batches)")
    ap.add_argument("--ablation", action=argparse.BooleanOptionalAction, default=True,
                    help="restore the shared set (and random sets) to pretrained values and evaluate")
    ap.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                    help="also trace the pretrained model: its |S_k|/k is the curve a fine-tuned one is read against")
    ap.add_argument("--n-random", type=int, default=1, help="random sets of the same size restored as controls")
    ap.add_argument("--eval-people", type=int, help="people scored in the ablation (default: all)")
    ap.add_argument("--restore-mask", nargs="+", default=[], metavar="FILE", help="mask files to restore too")
    ap.add_argument("--save-influence", action="store_true", help="also save the two full influence vectors")
    add_device_args(ap)
    add_progress_arg(ap)
    return ap


@script(build_parser)
def main(args: argparse.Namespace) -> int:
    from recall_circuits.attribution.trace import TraceConfig
    from recall_circuits.data.bios import load_dataset
    from recall_circuits.runs.stages.trace import TraceStageConfig, run

    if args.people is None:          # the paper's 20, or the whole split where it is smaller; recorded as used
        ids = load_dataset(args.data).person_ids(None if args.split == "all" else args.split)
        args.people = max(1, min(20, len(ids)))
    trace = TraceConfig(n_people=args.people, split=args.split, mode=args.mode, bio_loss=args.bio_loss,
                        scale=args.scale, batch_size=args.batch_size, pack=args.pack or None)
    cfg = TraceStageConfig(base=args.base, finetuned=args.finetuned, data=args.data, out=args.out, trace=trace,
                           k=args.k, k_frac=args.k_frac, ablation=args.ablation, baseline=args.baseline,
                           n_random=args.n_random, max_eval_people=args.eval_people,
                           save_influence=args.save_influence, restore_masks=tuple(args.restore_mask),
                           device=args.device, dtype=args.dtype, overwrite=args.overwrite, verbose=args.progress)
    if run(cfg) is not None:
        log.info("wrote %s", args.out)   # (under torchrun, by the first process)
    return 0


if __name__ == "__main__":
    from recall_circuits.training.parallel import exit_process

    exit_process(main())
