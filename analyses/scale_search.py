"""Run the pre-registered people-scaling study (recall_circuits.runs.scale; the plan is in docs/results.md).

    python analyses/scale_search.py --device cuda --out DIR                    # every planned pair not yet done
    python analyses/scale_search.py --device cuda --out DIR --people 1000,300   # some numbers of people
    python analyses/scale_search.py --device cuda --out DIR --analyses          # mechanism analyses, best pair
    python analyses/scale_search.py --list                                      # the plan and what is done
    python analyses/scale_search.py --table                                     # the records as a table
    python analyses/scale_search.py --quick --out /tmp/scale --people 12,16     # the runner on a tiny model

The setting is chosen first, at 1,000 people: the grid's points in order until a pair meets the premise (both
recipes answer the trained questions and memorise the biographies); every other number of people then trains at
that setting. Each pair trains its two recipes at once (two processes; on a GPU both on the one device), evaluates
them (QA-ID, QA-OOD and its chance floor, BIO recall) at about ten points along training and at the end, and writes
OUT/<pair>/pair.json and RECORD/<pair>.json (default record: docs/scale; with --quick or --model, OUT/record).
A pair found in the record is done; an unfinished one starts again with the same command (no resumable
checkpoints: a GPU machine's disk does not outlive its lease). --analyses runs the mechanism analyses and the
report on the pair with the largest gap whose premise holds (or --pair), where its models were trained.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from recall_circuits.cli import add_device_args, comma_list, parser, script

log = logging.getLogger("scale_search")
ROOT = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    ap = parser(__doc__)
    ap.add_argument("--out", default="runs/scale", help="the study's working folder: one folder per pair")
    ap.add_argument("--record", help="where each finished pair's record is kept as <pair>.json, to be committed "
                    "(pairs found there are done); default: docs/scale, or OUT/record with --quick or --model")
    ap.add_argument("--people", type=comma_list(int, "numbers of people"),
                    help="comma-separated numbers of people to run (default: the plan's 300,1000,3000,10000)")
    ap.add_argument("--model", help="another model for both recipes, to try the runner (default: smollm2-135m)")
    ap.add_argument("--quick", action="store_true", help="tiny-llama and the tiny preset's analysis sizes: the "
                    "runner in seconds (its models learn nothing; the setting is chosen at the smallest --people)")
    ap.add_argument("--analyses", action="store_true",
                    help="run the mechanism analyses and write summary.json and report.html for the best pair")
    ap.add_argument("--pair", help="with --analyses: this pair (e.g. p1000-G1) instead of the best")
    ap.add_argument("--keep-snapshots", action="store_true",
                    help="keep the snapshots along training once the learning curves are measured")
    ap.add_argument("--list", action="store_true", help="print the plan and what is done, and exit")
    ap.add_argument("--table", action="store_true", help="print the records as a markdown table, and exit")
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=False, help="progress bars")
    add_device_args(ap, device="cpu", dtype="bfloat16", dtypes=("bfloat16", "float32"))
    return ap


@script(build_parser)
def main(args: argparse.Namespace) -> int:
    from recall_circuits.runs.scale import (  # noqa: PLC0415
        MODEL,
        PEOPLE,
        SELECT_AT,
        StudyConfig,
        best,
        load_rows,
        plan_lines,
        run_analyses,
        run_study,
        table_markdown,
    )

    model = args.model or ("tiny-llama" if args.quick else MODEL)
    trial = args.quick or model != MODEL
    people = args.people or ([] if trial else list(PEOPLE))
    if trial and not people and not (args.list or args.table or args.analyses):
        raise SystemExit("scale_search.py: error: --people is required with --quick or --model")
    select_at = min(people) if trial and people else SELECT_AT
    record = Path(args.record) if args.record else (Path(args.out) / "record" if trial else ROOT / "docs" / "scale")
    cfg = StudyConfig(out=args.out, record=str(record), device=args.device, dtype=args.dtype, model=model,
                      select_at=select_at, keep_snapshots=args.keep_snapshots, quick=args.quick,
                      verbose=args.progress)
    rows = load_rows(record, args.out)
    if args.list:
        print("\n".join(plan_lines(rows, people, select_at)))
        return 0
    if args.table:
        print(table_markdown(rows), end="")
        return 0
    if args.analyses:
        summary = run_analyses(cfg, args.pair)
        for d in summary["directions"]:
            log.info("%-18s %s", d["name"], d["verdict"])
        return 0
    rows = run_study(cfg, people)
    b = best(rows)
    log.info("records in %s; the largest gap with the premise: %s", record,
             f"{b['setting']['id']} {b['gap']['value']:.3f}" if b else "none yet")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
