"""Gradient consistency, representation consistency and input signature of BIO vs QA (the paper's 2026 revision).

    python analyses/consistency.py --model mixed=runs/reproduce/mixed/model \
        --model two-stage=runs/reproduce/two-stage/model --data runs/reproduce/data --out runs/consistency \
        --along mixed=runs/reproduce/mixed      # + gradient consistency along a run's snapshots
"""

from __future__ import annotations

import logging

from recall_circuits.cli import model_set_parser
from recall_circuits.errors import cli_entry

log = logging.getLogger("consistency")


@cli_entry
def main(argv: list[str] | None = None) -> int:
    ap = model_set_parser(__doc__)
    ap.add_argument("--along", action="append", default=[],
                    help="NAME=TRAINING_RUN_DIR (repeatable): gradient consistency along its snapshots/")
    args = ap.parse_args(argv)
    from recall_circuits.loading import parse_model_specs

    models = parse_model_specs(args.model)
    along = parse_model_specs(args.along, what="--along") if args.along else None
    from recall_circuits.consistency import run_consistency

    run_consistency(models, args.data, args.out, n_people=args.n_people, split=args.split, along=along,
                    overwrite=args.overwrite, device=args.device, dtype=args.dtype)
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
