"""Generate bioS BIO/QA data with an ID/OOD split of people.

    python analyses/make_data.py --people 100 --seed 0 --out data/generated/p100
    python analyses/make_data.py --preset cpu --out data/generated/cpu
"""

from __future__ import annotations

import argparse
import logging

from recall_circuits.data import DataConfig, generate, write_dataset
from recall_circuits.cli import HelpFormatter
from recall_circuits.errors import cli_entry
from recall_circuits.presets import DATA_PRESETS, preset

log = logging.getLogger("make_data")


@cli_entry
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", choices=sorted(DATA_PRESETS))
    ap.add_argument("--people", type=int)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--multi", type=int, default=1, help="BIO texts per person")
    ap.add_argument("--permute", action=argparse.BooleanOptionalAction, default=False)
    ap.add_argument("--fullname", action=argparse.BooleanOptionalAction, default=False)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    cfg = preset(DATA_PRESETS, args.preset) if args.preset else {"n_people": 100, "seed": 0}
    if args.people is not None:
        cfg["n_people"] = args.people
    if args.seed is not None:
        cfg["seed"] = args.seed
    ds = generate(DataConfig(**cfg, multi=args.multi, permute=args.permute, fullname=args.fullname))
    out = write_dataset(ds, args.out, overwrite=args.overwrite)
    log.info("wrote %s: %s", out, ds.manifest["counts"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
