"""The end-to-end reproduction on the embedded default model (or, with --quick, on a tiny model in seconds).

    python analyses/reproduce.py --out runs/reproduce            # SmolLM2-135M, cpu preset (see README for time)
    python analyses/reproduce.py --quick --out /tmp/repro        # tiny-llama, same pipeline
    python analyses/reproduce.py --out runs/reproduce --sensitivity   # + the QA-phase learning-rate table
    python analyses/reproduce.py --out runs/reproduce --report-only   # the summary and report again, nothing computed

Every stage is cached in OUT and skipped when complete: rerun the same command to resume after an interruption.
Writes OUT/summary.json and OUT/report.html; the report of the cpu preset also shows where the regime search that
sets the preset stands (the pairs in docs/search).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from recall_circuits.cli import add_device_args, add_progress_arg, parser, script

log = logging.getLogger("reproduce")
SEARCH_RECORD = Path(__file__).resolve().parents[1] / "docs" / "search"   # the regime search's finished pairs


def build_parser() -> argparse.ArgumentParser:
    ap = parser(__doc__)
    ap.add_argument("--out", required=True, help="run directory: every stage, summary.json and report.html")
    ap.add_argument("--quick", action="store_true", help="tiny model and data: the same pipeline in seconds")
    ap.add_argument("--sensitivity", action=argparse.BooleanOptionalAction, default=False,
                    help="also run the QA-phase learning-rate sensitivity rows")
    ap.add_argument("--model", help="override the preset's model (registry name or checkpoint directory)")
    ap.add_argument("--overwrite", action="store_true",
                    help="compute again the stages whose inputs (model, data, options) changed, instead of refusing")
    ap.add_argument("--report-only", action="store_true",
                    help="compute nothing: write summary.json and report.html again from OUT's finished stages "
                         "(stages computed from other inputs, e.g. another library version, are named in the report)")
    ap.add_argument("--side-by-side", action=argparse.BooleanOptionalAction, default=None,
                    help="fine-tune the two recipes at once, each in its own process with half the torch threads "
                         "(default: on a CPU; --no-side-by-side: one after the other in this process)")
    add_device_args(ap)
    add_progress_arg(ap)
    return ap


@script(build_parser)
def main(args: argparse.Namespace) -> int:
    from recall_circuits.runs.pipeline import check_out, reproduce

    check_out(args.out, quick=args.quick, model=args.model, overwrite=args.overwrite)   # before any work

    summary = reproduce(args.out, quick=args.quick, sensitivity=args.sensitivity, model=args.model,
                        verbose=args.progress, overwrite=args.overwrite, device=args.device,
                        dtype=args.dtype, report_only=args.report_only, side_by_side=args.side_by_side,
                        search_record=None if args.quick or not SEARCH_RECORD.is_dir() else SEARCH_RECORD)
    for d in summary["directions"]:
        log.info("%-18s %s", d["name"], d["verdict"])
    log.info("wrote %s/summary.json and %s/report.html", args.out, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
