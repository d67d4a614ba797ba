"""The two recipes' fine-tuning one after the other with every torch thread (the baseline) vs side by side, each
in its own process with half the threads (what ``analyses/reproduce.py`` does on a CPU), alternating in one run.

    python tests/benchmarks/bench_side_by_side.py --out FILE                      # SmolLM2-135M, cpu preset
    python tests/benchmarks/bench_side_by_side.py --model tiny-llama --steps 20 --out FILE

Both ways start the same processes (:func:`recall_circuits.runs.stages.side_by_side.run_side_by_side`, one per run)
on the ``cpu`` preset's data and options and stop each run after ``--steps`` optimiser steps (two-stage's first
steps are biography steps, mixed's a mix, in both ways); the wall time includes each process's start. Reports
each way's wall time per repeat, the median ratio, and each run's seconds per step from its own log.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from recall_circuits.data.bios import DataConfig, generate, write_dataset
from recall_circuits.models.registry import resolve_model
from recall_circuits.runs.stages.side_by_side import run_side_by_side
from recall_circuits.training.presets import TRAIN_PRESETS, preset

from _common import alternate, environment, write_result  # tests/benchmarks/_common.py (the script's directory)


def _per_step(out: Path) -> float:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return (rows[-1]["elapsed_s"] - rows[0]["elapsed_s"]) / max(1, rows[-1]["step"] - rows[0]["step"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="default: the cpu preset's model")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="every thread: the baseline's")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    opts = preset(TRAIN_PRESETS, "cpu") | ({"model": args.model} if args.model else {})
    resolve_model(opts["model"])           # converted once, before any process would race to do it
    res: dict = {"benchmark": "side_by_side", "model": opts["model"], "steps": args.steps, "threads": args.threads,
                 "baseline": "one after the other, every thread", "ours": "side by side, half the threads each"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_dataset(generate(DataConfig(n_people=100, seed=0)), root / "data", overwrite=True)

        def cfgs(where: str) -> dict[str, dict]:
            return {s: opts | {"strategy": s, "data": str(root / "data"), "out": str(root / where / s)}
                    for s in ("two-stage", "mixed")}

        def measure(way: str, r: int) -> dict:
            jobs = cfgs(f"{way}{r}")
            groups = [{s: c} for s, c in jobs.items()] if way == "baseline" else [jobs]
            threads = args.threads if way == "baseline" else max(1, args.threads // 2)
            t0 = time.perf_counter()
            for group in groups:
                run_side_by_side(group, logs=root / f"{way}{r}", threads=threads, verbose=False,
                                 stop_after_steps=args.steps)
            return {"wall_s": time.perf_counter() - t0,
                    "s_per_step": {s: _per_step(Path(c["out"])) for s, c in jobs.items()}}

        res |= alternate(args.repeats, measure)
    res["environment"] = environment()
    write_result(args.out, res)


if __name__ == "__main__":
    main()
