"""The training loop as it runs, today's way against the fast path, in one process on the same examples.

    python tests/benchmarks/bench_train_fast.py --out FILE                          # SmolLM2-135M, this machine
    python tests/benchmarks/bench_train_fast.py --device cuda --people 1000 --out FILE

Each way is one call of :func:`recall_circuits.training.loop.train` (mixed, one pass over the same generated
biographies and ID questions, tied embedding frozen as in the search, no checkpoints): ``baseline`` is the loop as
the regime search ran it (batch 4, float32, the loss read back every step, batches in shuffled order); ``fast`` is
the fast path (batch ``--batch-size``, bfloat16 autocast, length buckets, the loss read back every 50 steps); with
``--compile`` also ``fast+compile``. For each: the loop's wall time (from the run's own record, the saving of the
final model included), optimiser steps and ms a step, the real (non-padding) input tokens a second and the share of
padding in the batches, peak GPU memory, and on a GPU the model FLOPs utilisation (MFU: 6 x non-embedding
parameters x tokens a second over the GPU's dense bfloat16 peak; the attention's own FLOPs not counted, so a lower
estimate). ``--smoke``: a tiny model and a few people (seconds; the suite runs it to keep the script working).
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
from pathlib import Path

import torch

from _common import environment, write_result  # tests/benchmarks/_common.py (the script's directory)

# dense bfloat16 peak of the GPUs this project is lent (SXM parts), FLOP/s
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def _padding(cfg, bio_t, qa_t) -> tuple[int, int]:
    """(real tokens, padded tokens) over the run's batches, from the loop's own batching."""
    from recall_circuits.training.loop import build_phases, epoch_batches  # noqa: PLC0415

    data = {"bio": bio_t, "qa": qa_t}
    lengths = {f: [len(t["input_ids"]) for t in v] for f, v in data.items()} if cfg.length_buckets else None
    real = padded = 0
    for phase in build_phases(cfg, len(bio_t), len(qa_t)):
        for e in range(phase.epochs):
            for b in epoch_batches(phase, e, cfg.batch_size, cfg.seed, lengths):
                ls = [len(data[f][i]["input_ids"]) for f, i in b]
                real += sum(ls)
                padded += len(ls) * max(ls)
    return real, padded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--people", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=64, help="the fast way's batch")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--compile", action="store_true", help="also the fast way under torch.compile")
    ap.add_argument("--threads", type=int, default=1, help="torch threads on a CPU (one, as each arm of a pair)")
    ap.add_argument("--smoke", action="store_true", help="tiny-llama, 12 people: checks the script, not a figure")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    from recall_circuits.artefacts import read_json  # noqa: PLC0415
    from recall_circuits.data.bios import DataConfig, generate, load_dataset, write_dataset  # noqa: PLC0415
    from recall_circuits.models.loading import load_tokenizer  # noqa: PLC0415
    from recall_circuits.models.registry import resolve_model  # noqa: PLC0415
    from recall_circuits.training.loop import TRAIN_META, TrainConfig, tokenize_dataset, train  # noqa: PLC0415

    if args.smoke:
        args.model, args.people, args.batch_size = "tiny-llama", 12, 8
    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = torch.device(args.device)
    model_dir = resolve_model(args.model)
    tmp = Path(tempfile.mkdtemp(prefix="bench_train_fast-"))
    write_dataset(generate(DataConfig(n_people=args.people, seed=0)), tmp / "data")
    bio_t, qa_t = tokenize_dataset(load_tokenizer(model_dir), load_dataset(tmp / "data"))
    common = dict(model=str(model_dir), strategy="mixed", data=str(tmp / "data"), epochs=1, lr=5e-4,
                  warmup_frac=0.03, schedule="constant", freeze_embeddings=True, checkpoint_every=0,
                  device=args.device, seed=0)
    ways = {"baseline": dict(batch_size=4),
            "fast": dict(batch_size=args.batch_size, bf16=True, length_buckets=True, log_every=50)}
    if args.compile:
        ways["fast+compile"] = ways["fast"] | {"compile": True}
    n_params = None
    res = {"benchmark": "train_fast", "model": args.model, "people": args.people, "device": args.device,
           "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
           "cpu_capability": torch.backends.cpu.get_cpu_capability(), "ways": {}}
    for way, opts in ways.items():
        cfg = TrainConfig(**common, **opts, out=str(tmp / way))
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        t0 = time.perf_counter()
        train(cfg, verbose=False)
        call_s = time.perf_counter() - t0
        meta = read_json(tmp / way / TRAIN_META)
        real, padded = _padding(cfg, bio_t, qa_t)
        loop_s = meta["wall_s"]
        row = {"options": opts, "call_s": call_s, "loop_s": loop_s, "steps": meta["steps"],
               "ms_per_step": 1000 * loop_s / meta["steps"], "real_tokens": real, "padded_tokens": padded,
               "padding_share": 1 - real / padded, "tokens_per_s": real / loop_s}
        if dev.type == "cuda":
            row["peak_memory_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
            if n_params is None:
                from safetensors import safe_open  # noqa: PLC0415

                with safe_open(str(tmp / way / "model" / "model.safetensors"), "pt") as f:
                    n_params = sum(math.prod(f.get_slice(k).get_shape())
                                   for k in f.keys() if "embed" not in k and "lm_head" not in k)
            peak = next((v for k, v in PEAK_BF16.items() if k in (res["gpu"] or "")), None)
            row["mfu"] = 6 * n_params * row["tokens_per_s"] / peak if peak else None
        res["ways"][way] = row
        print(f"{way}: {row['tokens_per_s']:.0f} tokens/s, {row['ms_per_step']:.1f} ms/step", flush=True)
    base = res["ways"]["baseline"]["tokens_per_s"]
    for row in res["ways"].values():
        row["speedup_tokens_per_s"] = row["tokens_per_s"] / base
    res["non_embedding_parameters"] = n_params
    res["environment"] = environment()
    shutil.rmtree(tmp)
    write_result(args.out, res)


if __name__ == "__main__":
    main()
