"""One recipe's analysis stages of a reproduction, in a process of its own.

``python -m recall_circuits.runs.analyse_recipe --job JSON [--threads N]`` runs
:func:`~recall_circuits.runs.pipeline.recipe_analyses` for ``job["recipe"]`` in the reproduction folder
``job["out"]`` (its ``data/`` and ``<recipe>/model``); :func:`~recall_circuits.runs.pipeline.reproduce` starts one
per recipe on a CPU so that the two recipes' traces, grafts, patching, head curves and consistency are computed at
once. Stages already finished from the same inputs are reused, so an interrupted child resumes with the next call.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from recall_circuits.runs.pipeline import _Ctx, recipe_analyses


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m recall_circuits.runs.analyse_recipe", description=__doc__)
    ap.add_argument("--job", required=True, help="out, base, recipe, quick, overwrite, device, dtype as JSON")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    job = json.loads(args.job)
    out = Path(job["out"])
    ctx = _Ctx(out / "data", bool(job["quick"]), bool(job["overwrite"]), False, job["device"], job["dtype"])
    recipe_analyses(ctx, out, job["base"], job["recipe"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
