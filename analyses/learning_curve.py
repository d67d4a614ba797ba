r"""QA accuracy (ID and OOD) along fine-tuning runs, at every snapshot each run kept (``snapshot_every``).

    python analyses/learning_curve.py --runs mixed=runs/reproduce/mixed two-stage=runs/reproduce/two-stage \
        --out runs/curve
    python analyses/learning_curve.py --runs A10-mixed=runs/search/A10/mixed --bio --out runs/curve-a10

Each point is kept (OUT/points/<name>/step-NNNNNN.json) as soon as it is measured, so an interrupted curve resumes
with the same command. Writes OUT/<name>/ (a LearningCurve: result.json), OUT/summary.json (each run's steps,
phases and accuracies with 95% bootstrap intervals over people, and its training loss over windows of about a
hundredth of the longest run: loss_windows), OUT/figures/learning_curve.html and OUT/figures/training_loss.html
(offline).
"""

from __future__ import annotations

import argparse
import logging

from recall_circuits.cli import add_device_args, add_progress_arg, add_run_args, parser, script

log = logging.getLogger("learning_curve")


def build_parser() -> argparse.ArgumentParser:
    ap = parser(__doc__)
    ap.add_argument("--runs", nargs="+", required=True, metavar="NAME=DIR",
                    help="named fine-tuning run directories (analyses/finetune.py --out), trained with snapshots")
    ap.add_argument("--data", help="dataset directory (default: the one each run was trained on)")
    ap.add_argument("--bio", action="store_true", help="also BIO recall at every point (slower)")
    ap.add_argument("--batch-size", type=int, default=32, help="evaluation batch size")
    add_run_args(ap, data=False)
    add_device_args(ap)
    add_progress_arg(ap)
    return ap


@script(build_parser)
def main(args: argparse.Namespace) -> int:
    from recall_circuits.models.loading import parse_model_specs
    from recall_circuits.runs.stages.curve import CurveConfig, run

    run(CurveConfig(parse_model_specs(args.runs, what="--runs"), args.out, data=args.data, bio=args.bio,
                    batch_size=args.batch_size, overwrite=args.overwrite, device=args.device, dtype=args.dtype,
                    verbose=args.progress))
    log.info("wrote %s/summary.json and %s/figures/learning_curve.html", args.out, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
