"""Exact gradient trace (batched per-example sums) vs the naive per-example backward loop, side by side in one
process on the embedded default model (SmolLM2-135M).

    python tests/benchmarks/bench_trace.py --out bench_trace.json [--n-examples 16] [--repeats 2]

Both compute Σ_x |∂L(x)/∂θ| over the same QA examples for every attention and MLP weight. The runs alternate
(baseline, ours, baseline, ours, ...) and the best time of each is kept, so load from other processes hits both;
``median_pair_ratio`` is the median over the alternating pairs of baseline / ours (each pair shares the machine's
state of that moment).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

from recall_circuits.attribution.trace import select_people, task_examples, trace_gradients, trace_gradients_loop
from recall_circuits.data.bios import DataConfig, generate
from recall_circuits.models.loading import load_bridge
from recall_circuits.models.params import ParamSpace

from _common import environment, write_result  # tests/benchmarks/_common.py (the script's directory)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n-examples", type=int, default=16)
    ap.add_argument("--task", default="qa", choices=["qa", "bio"])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--pack", type=int, default=4, help="examples per packed row (0: padded batches)")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    model = load_bridge(args.model)
    ds = generate(DataConfig(n_people=max(8, args.n_examples), seed=0))
    people = select_people(ds, max(8, args.n_examples), "all")
    ex = task_examples(model.tokenizer, ds, args.task, people)[: args.n_examples]
    space = ParamSpace(model)
    base_t, ours_t = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        ref = trace_gradients_loop(model, ex, space)
        base_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        ours = trace_gradients(model, ex, space, batch_size=args.batch_size, pad_id=model.tokenizer.pad_token_id,
                               pack=args.pack or None)
        ours_t.append(time.perf_counter() - t)
    rel = ((ours - ref).abs().max() / ref.abs().max()).item()
    res = {"benchmark": "trace", "model": args.model, "task": args.task, "n_examples": len(ex), "P": space.P,
           "batch_size": args.batch_size, "pack": args.pack or None,
           "mean_tokens": sum(len(e["input_ids"]) for e in ex) / len(ex), "baseline": "trace_gradients_loop",
           "baseline_s": min(base_t), "ours_s": min(ours_t), "speedup": min(base_t) / min(ours_t),
           "all_baseline_s": base_t, "all_ours_s": ours_t,
           "median_pair_ratio": statistics.median(b / o for b, o in zip(base_t, ours_t)), "max_rel_diff": rel,
           "machine": platform.machine(), **environment()}
    write_result(args.out, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
