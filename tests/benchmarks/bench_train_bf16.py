"""One fine-tuning step's forward and backward in float32 (the baseline) vs under bfloat16 autocast (weights,
gradients and optimiser state stay float32; ``finetune.py --dtype bfloat16``), alternating in one process on the same
batches of SmolLM2-135M with the tied embedding frozen and the unembedding at label rows only (as training runs).

    python tests/benchmarks/bench_train_bf16.py --out FILE

Reports per format the median over ``--repeats`` of each side, their ratio, and the relative difference of the
loss (bfloat16 rounds the matmuls' inputs: the two differ by more than rounding, so this is a speed figure, not a
claim that the runs are the same).
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
    res = {"benchmark": "train_step_bf16_autocast", "model": args.model, "batch_size": args.batch_size,
           "repeats": args.repeats, "formats": {}}
    for name, items in (("qa", qa), ("bio", bio)):
        batch = _collate(items[: args.batch_size], tok.pad_token_id)
        times: dict[bool, list[float]] = {False: [], True: []}
        losses: dict[bool, float] = {}
        for _ in range(args.repeats):
            for bf16 in (False, True):          # alternating: both sides see the same machine load
                t0 = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    loss, n = token_loss_sum(model, batch, label_rows_only=True)
                (loss / n).backward()
                times[bf16].append(time.perf_counter() - t0)
                losses[bf16] = float(loss.detach())
                model.zero_grad(set_to_none=True)
        base, ours = statistics.median(times[False]), statistics.median(times[True])
        res["formats"][name] = {"tokens": list(batch["input_ids"].shape), "float32_s": base, "bf16_autocast_s": ours,
                                "speedup": base / ours,
                                "loss_rel_diff": abs(losses[True] - losses[False]) / abs(losses[False])}
    res["environment"] = environment()
    write_result(args.out, res)


if __name__ == "__main__":
    main()
