"""Per-head × per-position patching sweep: ours (cells batched along the batch axis, runs started at the patched
layer and at the batch's first position after the corrupted run's cached keys/values, last-position logits only,
cells whose clean and corrupted activations are identical not run) vs
transformer_lens.patching.get_act_patch_attn_head_out_by_pos, side by side in one process on the embedded default
model with a ~15-token prompt (a same-template pair of two people).

    python tests/benchmarks/bench_patching.py --out bench_patching.json

Ours also runs with ``skip_identical=False`` (every cell run), reported as ``speedup_without_identical_skip``: the
identical cells are the positions before the first token where the two prompts differ
(``identical_prefix_positions``), so that saving depends on the pair.
"""

from __future__ import annotations

import argparse
import time

import torch
import transformer_lens.patching as tlp

from recall_circuits.data.bios import DataConfig, generate
from recall_circuits.interventions.patching import logit_diff_metric, patch_heads_by_pos
from recall_circuits.models.loading import load_bridge

from _common import environment, write_result  # tests/benchmarks/_common.py (the script's directory)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--cells-per-batch", type=int, default=36)
    args = ap.parse_args(argv)
    model = load_bridge(args.model)
    tok = model.tokenizer
    ds = generate(DataConfig(n_people=40, seed=0))
    qa = ds.qa()
    enc = [(e, tok(e["prompt"])["input_ids"]) for e in qa]
    # a clean/corrupted pair of the same template and token length (different people)
    by = {}
    pair = None
    for e, ids in enc:
        key = (e["attribute"], len(ids))
        if key in by and by[key][0]["answer"] != e["answer"]:
            pair = (by[key], (e, ids))
            break
        by[key] = (e, ids)
    (ce, cids), (xe, xids) = pair
    clean, corr = torch.tensor([cids]), torch.tensor([xids])
    first = lambda e: tok(e["prompt"] + " " + e["answer"])["input_ids"][len(tok(e["prompt"])["input_ids"])]  # noqa: E731
    metric = logit_diff_metric(torch.tensor([first(ce)]), torch.tensor([first(xe)]))
    t = time.perf_counter()
    ours = patch_heads_by_pos(model, clean, corr, metric, cells_per_batch=args.cells_per_batch)
    ours_s = time.perf_counter() - t
    t = time.perf_counter()
    every = patch_heads_by_pos(model, clean, corr, metric, cells_per_batch=args.cells_per_batch,
                               skip_identical=False)
    every_s = time.perf_counter() - t
    prefix = next((i for i, (a, b) in enumerate(zip(cids, xids, strict=True)) if a != b), len(cids))
    t = time.perf_counter()
    with torch.no_grad():
        _, cache = model.run_with_cache(clean)
        ref = tlp.get_act_patch_attn_head_out_by_pos(model, corr, cache, lambda lg: metric(lg[:, -1]).mean())
    base_s = time.perf_counter() - t
    res = {"benchmark": "patching", "model": args.model, "prompt_tokens": clean.shape[1],
           "cells": int(ours.numel()), "baseline": "transformer_lens get_act_patch_attn_head_out_by_pos",
           "baseline_s": base_s, "ours_s": ours_s, "speedup": base_s / ours_s,
           "max_abs_diff": float((ours - ref.cpu()).abs().max()),
           "identical_prefix_positions": prefix, "ours_s_without_identical_skip": every_s,
           "speedup_without_identical_skip": base_s / every_s,
           "max_abs_diff_without_identical_skip": float((every - ref.cpu()).abs().max()),
           "cells_per_batch": args.cells_per_batch, **environment()}
    write_result(args.out, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
