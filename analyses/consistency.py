r"""Gradient consistency, representation consistency and input signature of BIO vs QA (the paper's 2026 revision).

    python analyses/consistency.py --models mixed=runs/reproduce/mixed/model \
        two-stage=runs/reproduce/two-stage/model --data runs/reproduce/data --out runs/consistency \
        --along mixed=runs/reproduce/mixed      # + gradient consistency along a run's snapshots
"""

from __future__ import annotations

import argparse
import logging

from recall_circuits.cli import model_set_parser, script

log = logging.getLogger("consistency")


def build_parser() -> argparse.ArgumentParser:
    ap = model_set_parser(__doc__)
    ap.add_argument("--along", nargs="+", default=[], metavar="NAME=RUN_DIR",
                    help="named fine-tuning runs: gradient consistency along their snapshots/")
    return ap


@script(build_parser)
def main(args: argparse.Namespace) -> int:
    from recall_circuits.models.loading import parse_model_specs
    from recall_circuits.runs.stages.consistency import ConsistencyConfig, run

    run(ConsistencyConfig(parse_model_specs(args.models), args.data, args.out, n_people=args.people, split=args.split,
                          along=parse_model_specs(args.along, what="--along") if args.along else None,
                          overwrite=args.overwrite, verbose=args.progress, device=args.device, dtype=args.dtype))
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
