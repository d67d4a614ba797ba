"""One fine-tuning step's forward and backward: the unembedding at every position (the baseline) vs at the label
positions only (what training uses where it is exact), alternating in one process on the same batches.

    python tests/benchmarks/bench_train_step.py --out FILE                  # SmolLM2-135M, 4 QA and 4 BIO examples
    python tests/benchmarks/bench_train_step.py --model tiny-llama --out FILE

The tied embedding is frozen (as in the regime search's settings), so neither side forms its weight gradient.
Reports the median over ``--repeats`` of each side per format, their ratio, and the largest relative difference of
the loss (the two are the same computation up to rounding).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import environment, write_result  # tests/benchmarks/_common.py (the script's directory)

from recall_circuits.data import DataConfig, generate
from recall_circuits.loading import load_hf
from recall_circuits.training import _collate, token_loss_sum, tokenize_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    model, tok = load_hf(args.model)
    model.train()
    model.get_input_embeddings().weight.requires_grad_(False)
    bio, qa = tokenize_dataset(tok, generate(DataConfig(n_people=100, seed=0)))
    res = {"benchmark": "train_step", "model": args.model, "batch_size": args.batch_size, "repeats": args.repeats,
           "formats": {}}
    for name, items in (("qa", qa), ("bio", bio)):
        batch = _collate(items[: args.batch_size], tok.pad_token_id)
        times: dict[bool, list[float]] = {False: [], True: []}
        losses: dict[bool, float] = {}
        for _ in range(args.repeats):
            for rows in (False, True):          # alternating: both sides see the same machine load
                t0 = time.perf_counter()
                loss, n = token_loss_sum(model, batch, label_rows_only=rows)
                (loss / n).backward()
                times[rows].append(time.perf_counter() - t0)
                losses[rows] = float(loss.detach())
                model.zero_grad(set_to_none=True)
        base, ours = statistics.median(times[False]), statistics.median(times[True])
        res["formats"][name] = {"baseline_s": base, "ours_s": ours, "speedup": base / ours,
                                "max_rel_diff": abs(losses[True] - losses[False]) / abs(losses[False])}
    res["environment"] = environment()
    write_result(args.out, res)


if __name__ == "__main__":
    main()
