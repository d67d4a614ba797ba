"""Fine-tuning runs side by side, each in a process of its own with a share of the CPU cores.

On a CPU machine the two recipes of a comparison finish sooner trained at once, one torch thread each, than one
after the other with every thread: a small model's step does not scale to two threads, and two processes that each
ask for every core slow each other many times over (``tests/benchmarks/bench_side_by_side.py`` measures the
ratio). Each run is :func:`~recall_circuits.runs.stages.finetune.run_finetune` in a child process
(``python -m recall_circuits.runs.stages.finetune``), so an interrupted run resumes from its last checkpoint.

Example::

    cfg = {"model": "tiny-llama", "data": "runs/quick/data", "epochs": 1}
    res = rc.run_side_by_side({s: cfg | {"strategy": s, "out": f"runs/side/{s}"} for s in ("mixed", "two-stage")},
                              logs="runs/side")
    res["mixed"]["qa_ood_acc"], res["two-stage"]["qa_ood_acc"]
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from recall_circuits.artefacts import read_json
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.files import CHECKPOINT_DIR, METRICS_FILE, RESULTS_FILE, STATE_FILE, TRAIN_META
from recall_circuits.training.loop import trained

log = logging.getLogger(__name__)


def last_step(out: Path) -> int:
    """A run's last logged step (from the end of its ``metrics.jsonl``; 0 before its first)."""
    metrics = out / METRICS_FILE
    if not metrics.is_file():
        return 0
    with open(metrics, "rb") as f:
        f.seek(max(0, metrics.stat().st_size - 4096))
        lines = f.read().decode("utf-8", "replace").splitlines()
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError):   # a line being written, or the first, cut by the seek
            continue
    return 0


def total_steps(out: Path) -> int | None:
    """A run's number of steps, once it has written it (``TRAIN_META``)."""
    try:
        return read_json(out / TRAIN_META).get("total_steps")
    except (OSError, ValueError):        # not written yet, or being written
        return None


def run_state(out: str | Path) -> str | None:
    """Where a fine-tuning run in ``out`` stands, in words: "finished", "trained, evaluating" (the final model
    saved, its evaluation not yet written: a resume only evaluates), "410 / 13000 (resumes from 400)" (the last
    logged step, the run's steps, the last checkpoint's step), or None when it has not begun."""
    out = Path(out)
    if not out.is_dir():
        return None
    if (out / RESULTS_FILE).is_file():
        return "finished"
    if trained(out):
        return "trained, evaluating"
    total = total_steps(out)
    try:
        ckpt = int(read_json(out / CHECKPOINT_DIR / STATE_FILE)["global_step"])
    except (OSError, ValueError, KeyError):   # no checkpoint yet
        ckpt = 0
    return f"{last_step(out)} / {total if total is not None else '?'} (resumes from {ckpt})"


def run_processes(commands: dict[str, list[str]], *, logs: str | Path, threads: int, what: str,
                  progress: Callable[[str], tuple[int, int | None]] | None = None, verbose: bool = True,
                  poll_s: float = 2.0, unit: str = "step", log_prefix: str = "") -> None:
    """Run every command of ``commands`` (name -> ``python -m`` arguments, after the interpreter) at once, each a
    child process with ``threads`` torch threads importing this copy of the library; each child's output goes to
    ``logs/<log_prefix><name>.log``. With ``verbose`` and ``progress`` (name -> (done, total or None)) a bar per
    child follows it. A child that fails is a one-line error naming its log (``what`` names the work), raised once
    the others have finished; an interrupt or an error here stops every child."""
    if threads < 1:
        raise RecallCircuitsError(f"threads must be at least 1, not {threads}")
    logs = Path(logs)
    logs.mkdir(parents=True, exist_ok=True)
    here = str(Path(__file__).resolve().parents[2])     # the children import this copy of the library
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p))
    procs: dict[str, subprocess.Popen] = {}
    files = []
    try:
        for name, args in commands.items():
            log.info("%s: %s in its own process, %d torch thread(s); log %s", name, what, threads,
                     logs / f"{log_prefix}{name}.log")
            files.append(open(logs / f"{log_prefix}{name}.log", "a"))
            procs[name] = subprocess.Popen([sys.executable, *args], env=env, stdout=files[-1],
                                           stderr=subprocess.STDOUT)
        bars = {name: tqdm(desc=name, position=i, disable=not verbose or progress is None, unit=unit)
                for i, name in enumerate(procs)}
        while any(p.poll() is None for p in procs.values()):
            if progress is not None:
                for name, bar in bars.items():
                    bar.n, total = progress(name)
                    if bar.total is None and total is not None:
                        bar.total = total
                    bar.refresh()
            time.sleep(poll_s)
        for bar in bars.values():
            bar.close()
    finally:
        for p in procs.values():     # an interrupt or an error here: no child outlives the call
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
        for f in files:
            f.close()
    failed = [name for name, p in procs.items() if p.returncode != 0]
    if failed:
        named = ", ".join(str(logs / f"{log_prefix}{n}.log") for n in failed)
        raise RecallCircuitsError(f"{what} {', '.join(failed)} failed: see {named}; the same call resumes")


def run_side_by_side(cfgs: dict[str, dict[str, Any]], *, logs: str | Path, threads: int = 1, verbose: bool = True,
                     stop_after_steps: int | None = None, poll_s: float = 2.0) -> dict[str, dict[str, Any] | None]:
    """Train and evaluate every run of ``cfgs`` (name -> ``TrainConfig`` fields) at once, each in a child process
    with ``threads`` torch threads; a run whose ``out`` exists resumes. Each child's output goes to
    ``logs/<name>.log``; with ``verbose`` a progress bar per run follows its steps. Returns each run's results
    (None for a run stopped by ``stop_after_steps``, which simulates an interruption). A run that fails is a
    one-line error naming its log, raised once the others have finished; an interrupt stops every child (each
    resumes with the next call)."""
    commands = {name: ["-m", "recall_circuits.runs.stages.finetune", "--config", json.dumps(cfg),
                       "--threads", str(threads), "--no-progress", *(["--resume"] if Path(cfg["out"]).exists() else []),
                       *(["--stop-after-steps", str(stop_after_steps)] if stop_after_steps is not None else [])]
                for name, cfg in cfgs.items()}
    run_processes(commands, logs=logs, threads=threads, what="fine-tuning", verbose=verbose, poll_s=poll_s,
                  progress=lambda name: (last_step(Path(cfgs[name]["out"])), total_steps(Path(cfgs[name]["out"]))))
    done = {name: Path(cfg["out"]) / RESULTS_FILE for name, cfg in cfgs.items()}
    return {name: read_json(f) if f.is_file() else None for name, f in done.items()}
