"""One whole optimiser step of fine-tuning on a GPU (forward, backward, gradient clipping, AdamW), three ways
alternating in one process on the same batches: eager with foreach AdamW (the baseline), eager with fused AdamW
(``optimizer_impl="fused"``, the training loop's default), and the model under ``torch.compile`` (foreach AdamW).

    python tests/benchmarks/bench_train_step_gpu.py --out FILE                       # SmolLM2-135M from the cache
    python tests/benchmarks/bench_train_step_gpu.py --config DIR --out FILE          # DIR/config.json, random weights
    python tests/benchmarks/bench_train_step_gpu.py --config tests/benchmarks/configs/llama-3.2-3b --tokenizer TOK \
        --bf16 --gradient-checkpointing --train-embeddings --batch-size 64 --ways eager --out FILE

``--config``: a checkpoint folder whose ``config.json`` and tokenizer are used with freshly initialised weights (a
speed figure: the kernels and their shapes are those of the checkpoint). Each way has its own copy of the model and
optimiser, from the same weights; by default the tied embedding is frozen as in the regime search, and the step is
float32 with TF32 off (the search's precision); one CPU thread (as each arm of a pair). Reports each way's median
step time over ``--steps`` steps after ``--warmup`` steps (the compiled model compiles during its warm-up, whose
time is reported apart), the speed-ups against the baseline, the label and input tokens a second, the loss of the
last step of each way and the peak GPU memory of the whole run.

``--bf16`` (autocast, weights and optimiser in float32), ``--gradient-checkpointing`` and ``--train-embeddings``
give the paper-scale presets' step: ``tests/benchmarks/configs/`` holds the published Llama-3.2-3B and Pythia-2.8B
shapes (3.21 B and 2.78 B parameters), to run with ``--batch-size 64 --ways eager`` (one way: no second copy of the
model) and any tokenizer folder whose ids fit the vocabulary (``--tokenizer``, e.g. SmolLM2's: the sequences are
then SmolLM2's lengths, not the real tokenizer's).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from recall_circuits.data.bios import DataConfig, generate
from recall_circuits.training.loop import _collate, enable_checkpointing, token_loss_sum, tokenize_dataset

from _common import environment, write_result  # tests/benchmarks/_common.py (the script's directory)


def _load(args: argparse.Namespace, init_device: str):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    if args.config:
        torch.manual_seed(0)
        cfg = AutoConfig.from_pretrained(args.config)
        with torch.device(init_device):
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation="eager")
        return model, AutoTokenizer.from_pretrained(args.tokenizer or args.config)
    from recall_circuits.models.loading import load_hf  # noqa: PLC0415

    return load_hf(args.model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--config", help="a checkpoint folder: its config and tokenizer, random weights")
    ap.add_argument("--tokenizer", help="a folder with the tokenizer for --config (default: the --config folder)")
    ap.add_argument("--train-embeddings", action="store_true",
                    help="train the input embedding too (the paper-scale presets); default frozen (the search)")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--ways", default="eager,fused,compile")
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast (weights and optimiser in float32)")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--device", default="cuda", help="cpu: a smoke test of the script only")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.backends.cuda.matmul.allow_tf32 = False
    ways = args.ways.split(",")
    # one way: the weights are initialised where they will train (a 3B model initialises slowly on a CPU)
    model, tok = _load(args, args.device if len(ways) == 1 else "cpu")
    model.get_input_embeddings().weight.requires_grad_(args.train_embeddings)
    b = args.batch_size
    bio, qa = tokenize_dataset(tok, generate(DataConfig(n_people=max(100, 8 * b), seed=0)))  # 8 BIO batches
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    batches = [{k: v.to(dev) for k, v in _collate(items[i * b:(i + 1) * b], tok.pad_token_id).items()}
               for items in (qa, bio) for i in range(8)]       # 8 QA and 8 BIO batches, taken in turn
    runs = {}
    for way in ways:
        m = (model if len(ways) == 1 else copy.deepcopy(model)).to(dev).train()
        if args.gradient_checkpointing:
            enable_checkpointing(m)
        params = [p for p in m.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=5e-4, weight_decay=0.0, **({"fused": True} if way == "fused"
                                                                     else {"foreach": True}))
        if way == "compile":
            m.base_model.compile()      # in place: the loss calls model.base_model (see token_loss_sum)
        runs[way] = {"model": m, "opt": opt, "times": [],
                     "warmup_s": 0.0, "loss": None}

    def step(r: dict, batch: dict) -> float:
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=args.bf16):
            s, n = token_loss_sum(r["model"], batch, label_rows_only=True)
        (s / n).backward()
        torch.nn.utils.clip_grad_norm_(r["model"].parameters(), 1.0)
        r["opt"].step()
        r["opt"].zero_grad(set_to_none=True)
        return float(s.detach())       # one sync a step, as the training loop logs the loss

    res = {"benchmark": "train_step_gpu", "model": args.config or args.model, "random_weights": bool(args.config),
           "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "batch_size": b,
           "steps": args.steps, "warmup": args.warmup, "bf16": args.bf16, "train_embeddings": args.train_embeddings,
           "gradient_checkpointing": args.gradient_checkpointing,
           "parameters": sum(p.numel() for p in model.parameters()), "ways": {}}
    measured = [batches[i % len(batches)] for i in range(args.warmup, args.warmup + args.steps)]
    label_tokens = statistics.mean(int((x["labels"][:, 1:] != -100).sum()) for x in measured)
    input_tokens = statistics.mean(int(x["attention_mask"].sum()) for x in measured)
    for i in range(args.warmup + args.steps):
        batch = batches[i % len(batches)]
        for way, r in runs.items():          # alternating: every way sees the same batches and machine state
            sync()
            t0 = time.perf_counter()
            r["loss"] = step(r, batch)
            dt = time.perf_counter() - t0
            if i < args.warmup:
                r["warmup_s"] += dt
            else:
                r["times"].append(dt)
    base = statistics.median(runs[ways[0]]["times"])
    for way, r in runs.items():
        med = statistics.median(r["times"])
        res["ways"][way] = {"median_step_s": med, "speedup_vs_" + ways[0]: base / med, "warmup_s": r["warmup_s"],
                            "input_tokens_per_s": input_tokens / med, "label_tokens_per_s": label_tokens / med,
                            "last_loss": r["loss"]}
    if dev.type == "cuda":
        res["peak_memory_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
    res["environment"] = environment()
    write_result(args.out, res)


if __name__ == "__main__":
    main()
