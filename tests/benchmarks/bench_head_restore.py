"""Single-head restore sweep: ours (in-place slice swaps, each evaluation started at the restored layer from the
kept fine-tuned residual, answer-position logits only) vs a naive loop that deep-copies the fine-tuned model and
loads the pretrained slices of one head into the copy, then evaluates it with the library's plain batched scorer.
Both run side by side in one process on the same heads; peak memory of ours is measured in a child process
against one plain evaluation of the fine-tuned model (same data, same batch size).

    python tests/benchmarks/bench_head_restore.py --finetuned runs/cpu/mixed/model --data runs/cpu/data --out FILE

``--layers`` picks the layers swept by both (default: four spread over the depth, so the start-at-layer saving
is represented fairly); ``--all-layers`` sweeps every head (the naive loop then takes a long time).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import subprocess
import sys
import threading
import time

import torch

from recall_circuits.data.bios import load_dataset
from recall_circuits.interventions.head_ablation import QAScorer, single_head_sweep
from recall_circuits.models.loading import load_bridge
from recall_circuits.models.params import HeadSlices, head_views

from _common import environment, write_result  # tests/benchmarks/_common.py (the script's directory)

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakRSS:
    """Samples the resident set size every 2 ms between start and stop."""

    def __init__(self) -> None:
        self.peak, self._run = 0, False

    def __enter__(self) -> PeakRSS:
        self._run, self.peak = True, rss()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()
        return self

    def _loop(self) -> None:
        while self._run:
            self.peak = max(self.peak, rss())
            time.sleep(0.002)

    def __exit__(self, *exc: object) -> None:
        self._run = False
        self._t.join()
        self.peak = max(self.peak, rss())


def probe(args: argparse.Namespace) -> dict[str, float]:
    """Child process: RSS above the post-import level while (plain) evaluating once or (ours) sweeping."""
    ds = load_dataset(args.data)
    gc.collect()
    rss0 = rss()
    if args.probe == "ours":
        base = load_bridge(args.base)
        slices = HeadSlices(base)
        del base
        gc.collect()
    ft = load_bridge(args.finetuned)
    with PeakRSS() as pk:
        if args.probe == "plain":
            QAScorer(ft, ds, args.max_people, args.batch_size)()
        else:
            single_head_sweep(ft, slices, ds, max_people=args.max_people, batch_size=args.batch_size,
                              layers=args.layer_list)
    model_bytes = sum(p.numel() * p.element_size() for p in {id(p): p for p in ft.parameters()}.values())
    return {"peak_above_start": pk.peak - rss0, "model_bytes": model_bytes}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--base", default="smollm2-135m")
    ap.add_argument("--finetuned", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--max-people", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--layers", default=None, help="comma-separated layers (default: 4 spread over the depth)")
    ap.add_argument("--all-layers", action="store_true")
    ap.add_argument("--probe", choices=["plain", "ours"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    base = load_bridge(args.base)
    n_layers = base.cfg.n_layers
    if args.all_layers:
        args.layer_list = list(range(n_layers))
    elif args.layers:
        args.layer_list = [int(x) for x in args.layers.split(",")]
    else:
        args.layer_list = sorted({0, n_layers // 3, (2 * n_layers) // 3, n_layers - 1})
    if args.probe:
        del base
        print(json.dumps(probe(args)))
        return 0
    ft = load_bridge(args.finetuned)
    ds = load_dataset(args.data)
    H = ft.cfg.n_heads

    t = time.perf_counter()
    ours = single_head_sweep(ft, base, ds, max_people=args.max_people, batch_size=args.batch_size,
                             layers=args.layer_list)
    ours_s = time.perf_counter() - t

    t = time.perf_counter()
    scorer = QAScorer(ft, ds, args.max_people, args.batch_size)
    naive: dict[str, torch.Tensor] = {}
    for layer in args.layer_list:
        for head in range(H):
            m = copy.deepcopy(ft)
            with torch.no_grad():
                src = head_views(base, layer, head)
                for name, v in head_views(m, layer, head).items():
                    v.copy_(src[name])
            scorer.model = m
            for k, v in scorer().items():
                naive.setdefault(k, torch.full((n_layers, H), float("nan")))[layer, head] = v
            del m
    base_s = time.perf_counter() - t
    diff = max(float((ours.grids[k] - v)[args.layer_list].abs().max()) for k, v in naive.items())

    mem = {}
    for kind in ("plain", "ours"):
        cmd = [sys.executable, __file__, "--probe", kind, "--out", "-", "--base", args.base, "--finetuned",
               args.finetuned, "--data", args.data, "--max-people", str(args.max_people), "--batch-size",
               str(args.batch_size), "--layers", ",".join(map(str, args.layer_list))]
        res = subprocess.run(cmd, check=True, capture_output=True, text=True)
        mem[kind] = json.loads(res.stdout.strip().splitlines()[-1])
    res = {"benchmark": "head_restore", "base": args.base, "finetuned": args.finetuned,
           "layers": args.layer_list, "heads_swept": len(args.layer_list) * H, "n_questions": ours.n_questions,
           "baseline": "deepcopy of the fine-tuned model + pretrained head slices loaded + QAScorer, per head",
           "baseline_s": base_s, "ours_s": ours_s, "speedup": base_s / ours_s, "max_abs_diff": diff,
           "peak_mem_plain_eval_bytes": mem["plain"]["peak_above_start"],
           "peak_mem_ours_bytes": mem["ours"]["peak_above_start"], "model_bytes": mem["ours"]["model_bytes"],
           "peak_mem_ratio": mem["ours"]["peak_above_start"] / mem["plain"]["peak_above_start"],
           "peak_mem_ratio_definition": "peak RSS above the post-import level during our sweep / during one plain "
                                        "evaluation of the fine-tuned model (one model plus its eval batch)",
           **environment(),
           "load_avg_1min": os.getloadavg()[0]}
    write_result(args.out, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
