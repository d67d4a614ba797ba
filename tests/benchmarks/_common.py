"""What every benchmark script records and how it writes its figures (JSON file + stdout)."""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable
from typing import Any

import torch


def environment() -> dict[str, Any]:
    """Threads, cores, torch version and the 1/5/15-minute load averages when the figures were written (on a
    shared machine the load moves both sides' times, and the ratio with them)."""
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "load_average": load}


def write_result(path: str, res: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res, indent=2))


def alternate(repeats: int, measure: Callable[[str, int], dict[str, Any]]) -> dict[str, Any]:
    """``measure(way, repeat)`` for way ``baseline`` then ``ours`` in each repeat (alternating, so that both ways
    see the same machine load); each returns a dict with ``wall_s``. Adds each repeat's speedup and the median."""
    reps = []
    for r in range(repeats):
        rep: dict[str, Any] = {way: measure(way, r) for way in ("baseline", "ours")}
        rep["speedup"] = rep["baseline"]["wall_s"] / rep["ours"]["wall_s"]
        reps.append(rep)
    return {"repeats": reps, "median_speedup": statistics.median(r["speedup"] for r in reps)}
