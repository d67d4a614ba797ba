"""Generate bioS BIO/QA data with an ID/OOD split of people.

    python analyses/make_data.py --people 100 --seed 0 --out data/generated/p100
    python analyses/make_data.py --preset cpu --out data/generated/cpu
    python analyses/make_data.py --people 100 --pools my_pools --out data/generated/mine   # your own values

The names, values and templates come from data/pools/ (plain files; see data/README.md), or from --pools DIR.
"""

from __future__ import annotations

import argparse
import logging

from recall_circuits.cli import parser, script
from recall_circuits.data.bios import DataConfig, generate, write_dataset
from recall_circuits.training.presets import DATA_PRESETS, preset

log = logging.getLogger("make_data")


def build_parser() -> argparse.ArgumentParser:
    ap = parser(__doc__)
    ap.add_argument("--out", required=True, help="dataset directory to write")
    ap.add_argument("--preset", choices=sorted(DATA_PRESETS), help="people and seed of a fine-tuning preset")
    ap.add_argument("--people", type=int, help="people generated, half ID and half OOD (default: the preset's, or 100)")
    ap.add_argument("--seed", type=int, help="generator seed (default: the preset's, or 0)")
    ap.add_argument("--multi", type=int, default=1, help="BIO texts per person")
    ap.add_argument("--permute", action=argparse.BooleanOptionalAction, default=False,
                    help="shuffle the sentences of each biography")
    ap.add_argument("--fullname", action=argparse.BooleanOptionalAction, default=False,
                    help="the full name in every sentence instead of a pronoun")
    ap.add_argument("--pools", help="directory of value pools and templates (default: data/pools)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing dataset in --out")
    return ap


@script(build_parser)
def main(args: argparse.Namespace) -> int:
    cfg = preset(DATA_PRESETS, args.preset) if args.preset else {"n_people": 100, "seed": 0}
    if args.people is not None:
        cfg["n_people"] = args.people
    if args.seed is not None:
        cfg["seed"] = args.seed
    ds = generate(DataConfig(**cfg, multi=args.multi, permute=args.permute, fullname=args.fullname, pools=args.pools))
    out = write_dataset(ds, args.out, overwrite=args.overwrite)
    log.info("wrote %s: %s", out, ds.manifest["counts"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
