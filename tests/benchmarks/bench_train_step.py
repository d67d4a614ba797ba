"""One fine-tuning step's forward and backward, two ways alternating in one process on the same batches.

    python tests/benchmarks/bench_train_step.py --out FILE                   # --compare label-rows (SmolLM2-135M)
    python tests/benchmarks/bench_train_step.py --compare bf16 --out FILE
    python tests/benchmarks/bench_train_step.py --model tiny-llama --out FILE

``--compare label-rows``: the unembedding at every position (the baseline) vs at the label positions only (what
training uses where it is exact); the two are the same computation up to rounding. ``--compare bf16``: float32 (the
baseline) vs bfloat16 autocast (``finetune.py --dtype bfloat16``: weights, gradients and optimiser state stay
float32), both at label rows only; bfloat16 rounds the matmuls' inputs, so the losses differ by more than rounding
and the figure is a speed figure only.

The tied embedding is frozen (as in the regime search's settings), so neither side forms its weight gradient.
Reports per format (4 QA and 4 BIO examples by default) the median over ``--repeats`` of each side, their ratio,
and the relative difference of the loss.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from recall_circuits.data.bios import DataConfig, generate
from recall_circuits.models.loading import load_hf
from recall_circuits.training.loop import _collate, token_loss_sum, tokenize_dataset

from _common import environment, write_result  # tests/benchmarks/_common.py (the script's directory)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--compare", default="label-rows", choices=["label-rows", "bf16"])
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    model, tok = load_hf(args.model)
    model.train()
    model.get_input_embeddings().weight.requires_grad_(False)
    bio, qa = tokenize_dataset(tok, generate(DataConfig(n_people=100, seed=0)))

    def step(batch: dict, ours: bool) -> float:
        rows, bf16 = (ours, False) if args.compare == "label-rows" else (True, ours)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, n = token_loss_sum(model, batch, label_rows_only=rows)
        (loss / n).backward()
        model.zero_grad(set_to_none=True)
        return float(loss.detach())

    res = {"benchmark": "train_step" if args.compare == "label-rows" else "train_step_bf16_autocast",
           "compare": args.compare, "model": args.model, "batch_size": args.batch_size, "repeats": args.repeats,
           "formats": {}}
    for name, items in (("qa", qa), ("bio", bio)):
        batch = _collate(items[: args.batch_size], tok.pad_token_id)
        times: dict[bool, list[float]] = {False: [], True: []}
        losses: dict[bool, float] = {}
        for _ in range(args.repeats):
            for ours in (False, True):          # alternating: both sides see the same machine load
                t0 = time.perf_counter()
                losses[ours] = step(batch, ours)
                times[ours].append(time.perf_counter() - t0)
        base, mine = statistics.median(times[False]), statistics.median(times[True])
        res["formats"][name] = {"tokens": list(batch["input_ids"].shape), "baseline_s": base, "ours_s": mine,
                                "speedup": base / mine,
                                "max_rel_diff": abs(losses[True] - losses[False]) / abs(losses[False])}
    res["environment"] = environment()
    write_result(args.out, res)


if __name__ == "__main__":
    main()
