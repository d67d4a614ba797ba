"""Run the pre-registered regime search (recall_circuits.runs.regime.PLAN; the rule is in docs/results.md).

    python analyses/regime_search.py --out runs/search            # every pair not yet done, in the plan's order
    python analyses/regime_search.py --out runs/search --only A1   # one pair
    python analyses/regime_search.py --out runs/search --list      # the plan and what is done
    python analyses/regime_search.py --table                       # the finished pairs' table (docs/results.md)
    python analyses/regime_search.py --out DIR --only A11 --device cuda --checkpoint-every 0   # on a GPU

Each pair runs its two arms side by side, one torch thread each (two 2-thread jobs on 2 cores slow each other
many times over), with analyses/finetune.py; an interrupted arm resumes from its last checkpoint with the same
command. OUT/<id>/pair.json holds the row (accuracies with 95% intervals over people, the gap, the verdict), copied to
docs/search/<id>.json to be committed (a pair found there is done); OUT/table.md the table so far. Keep OUT
outside the work tree (e.g. ~/recall_circuits_search) when the checkpoints should outlive a fresh checkout. A pair
that takes its settings from the best pair so far (A11, A12: the best among the pairs before it in the plan) runs
only once no unfinished pair before it could change them.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from recall_circuits.cli import add_device_args, comma_list, parser, script
from recall_circuits.runs.regime import PLAN, SECOND_SEED

log = logging.getLogger("regime_search")
ROOT = Path(__file__).resolve().parents[1]


def _steps(text: str) -> int:
    """A number of optimiser steps, 0 or more (checked before anything is written)."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number of steps, 0 or more, not {text!r}")
    return int(text)


def _plan_id(text: str) -> str:
    if text not in {s.id for s in PLAN}:
        raise ValueError(text)
    return text


def build_parser() -> argparse.ArgumentParser:
    ap = parser(__doc__)
    ap.add_argument("--out", default="runs/search", help="the search's working directory (checkpoints, logs)")
    ap.add_argument("--record", help="where each finished pair's row is kept as <id>.json, to be committed (pairs "
                    "found there are done); default: docs/search, or OUT/record with --model")
    ap.add_argument("--only", type=comma_list(_plan_id, "pair ids of the plan"),
                    help="comma-separated pairs to run, e.g. A1,A3 (default: every pair not yet done)")
    ap.add_argument("--second-seed", action="store_true",
                    help=f"repeat the pair the decision rule chose with seed {SECOND_SEED} (data and training)")
    ap.add_argument("--model", help="another model for both arms (default: the cpu preset's, smollm2-135m); for "
                    "trying the runner on a tiny model")
    ap.add_argument("--list", action="store_true", help="print the plan, what is done, and exit")
    ap.add_argument("--table", action="store_true", help="print the table of the finished pairs (markdown) and exit")
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=False,
                    help="progress bars in the arms' logs")
    add_device_args(ap, device=None, dtype=None, dtypes=("float32", "bfloat16"))   # both arms; default: the preset's
    for name, what in (("checkpoint-every", "resumable checkpoints"), ("snapshot-every", "saved model snapshots")):
        ap.add_argument(f"--{name}", type=_steps, help=f"optimiser steps between the arms' {what} (default: the "
                        "search's; 0: none, e.g. on a machine whose disk does not outlive the run). Where the arms "
                        "save, not what they train: the row is the same")
    return ap


@script(build_parser)
def main(args: argparse.Namespace) -> int:
    from recall_circuits.runs.regime import table_markdown
    from recall_circuits.runs.search import SearchConfig, load_done, plan_lines, run_search

    out = Path(args.out)
    cfg = SearchConfig(out=out, record=Path(args.record) if args.record else (
        out / "record" if args.model else ROOT / "docs" / "search"), only=tuple(args.only or ()),
        second_seed=args.second_seed, model=args.model, progress=args.progress, device=args.device,
        dtype=args.dtype, checkpoint_every=args.checkpoint_every, snapshot_every=args.snapshot_every)
    if args.list:
        print("\n".join(plan_lines(cfg)))
    elif args.table:
        print(table_markdown(load_done(cfg.out, cfg.record)), end="")
    else:
        run_search(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
