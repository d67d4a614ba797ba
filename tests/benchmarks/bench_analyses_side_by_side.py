"""Each recipe's analysis stages (gradient trace + restore ablation, grafting, patching, head curves) one recipe
after the other with every torch thread (the baseline) vs side by side, each recipe in its own process with half
the threads (what ``analyses/reproduce.py`` does on a CPU), alternating in one run.

    python tests/benchmarks/bench_analyses_side_by_side.py --pair DIR --out FILE

``--pair``: a folder holding ``two-stage/model`` and ``mixed/model`` fine-tuned from the default model (a
reproduction, or a pair of the regime search). Both ways start the same child processes
(``python -m recall_circuits.runs.analyse_recipe``) in a fresh folder each, with the ``--quick`` options of every
stage on a dataset of ``--people`` people (10: the head curves and single-head sweep then ask as many questions as
the main job's; the trace, grafting and patching do less): the wall time includes each process's start and its
hashing of the models.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from recall_circuits.data.bios import DataConfig, generate, write_dataset
from recall_circuits.models.registry import resolve_model
from recall_circuits.runs.pipeline import RECIPE_STAGES
from recall_circuits.runs.stages.side_by_side import run_processes
from recall_circuits.training.presets import TRAIN_PRESETS, preset

from _common import alternate, environment, write_result  # tests/benchmarks/_common.py (the script's directory)

RECIPES = ("two-stage", "mixed")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", required=True)
    ap.add_argument("--people", type=int, default=10)
    ap.add_argument("--base", default=preset(TRAIN_PRESETS, "cpu")["model"], help="the pretrained model (default: "
                    "the cpu preset's)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="every thread: the baseline's")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    pair = Path(args.pair)
    missing = [str(p) for p in (pair / s / "model" for s in RECIPES) if not p.exists()]
    if missing:
        raise SystemExit(f"error: missing {', '.join(missing)}")
    base = args.base
    resolve_model(base)                    # converted once, before any process would race to do it
    res: dict = {"benchmark": "analyses_side_by_side", "model": base, "pair": str(pair), "stages": RECIPE_STAGES,
                 "sizes": f"quick options, {args.people} people", "threads": args.threads,
                 "baseline": "one recipe after the other, every thread", "ours": "side by side, half the threads each"}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_dataset(generate(DataConfig(n_people=args.people, seed=0)), data, overwrite=True)

        def folder(where: str) -> Path:
            out = Path(tmp) / where
            shutil.copytree(data, out / "data")
            for s in RECIPES:
                (out / s).mkdir(parents=True)
                (out / s / "model").symlink_to((pair / s / "model").resolve())
            return out

        def command(out: Path, recipe: str, threads: int) -> list[str]:
            job = {"out": str(out), "base": base, "recipe": recipe, "quick": True, "overwrite": False,
                   "device": "cpu", "dtype": "float32"}
            return ["-m", "recall_circuits.runs.analyse_recipe", "--job", json.dumps(job), "--threads", str(threads)]

        def measure(way: str, r: int) -> dict:
            out = folder(f"{way}{r}")
            groups = [[s] for s in RECIPES] if way == "baseline" else [list(RECIPES)]
            threads = args.threads if way == "baseline" else max(1, args.threads // 2)
            t0 = time.perf_counter()
            for group in groups:
                run_processes({s: command(out, s, threads) for s in group}, logs=out, threads=threads,
                              what="analyses", verbose=False, log_prefix="analyses-")
            return {"wall_s": time.perf_counter() - t0}

        res |= alternate(args.repeats, measure)
    res["environment"] = environment()
    write_result(args.out, res)


if __name__ == "__main__":
    main()
