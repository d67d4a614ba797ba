"""Gradient consistency with one forward pass per biography (what ``gradient_consistency`` does: a person's
attributes share the biography's forward pass, one backward each) vs a forward pass per (person, attribute) pair
(the baseline), side by side in one process on the embedded default model (SmolLM2-135M).

    python tests/benchmarks/bench_consistency.py --out bench_consistency.json [--people 2] [--repeats 2]

Both compute the cosine of ∇L_BIO and ∇L_QA for every pair of the same people; the script checks that they agree
(``max_abs_diff``). The ways alternate (baseline, ours, baseline, ours, ...), so load from other processes hits
both; the ratio is each repeat's baseline / ours and their median.
"""

from __future__ import annotations

import argparse
import time

import torch

from recall_circuits.compare.consistency import _grad, _pair_examples, gradient_consistency
from recall_circuits.data.bios import DataConfig, generate
from recall_circuits.models.loading import gradients_for, load_bridge
from recall_circuits.models.params import ParamSpace

from _common import alternate, environment, write_result  # tests/benchmarks/_common.py (the script's directory)


def per_pair_baseline(model, ds, people) -> list[float]:
    """A forward and a backward pass for each side of each pair."""
    space = ParamSpace(model, include=("attn", "mlp"))
    params = space.params(model)
    out = []
    with gradients_for(model, params.values()):
        for bio, qa, _ in _pair_examples(model.tokenizer, ds, people):
            gb, gq = _grad(model, space, params, bio), _grad(model, space, params, qa)
            out.append(float(torch.nn.functional.cosine_similarity(gb, gq, dim=0)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--people", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    model = load_bridge(args.model)
    ds = generate(DataConfig(n_people=max(4, args.people), seed=0))
    people = sorted(ds.person_ids("ood"))[:args.people]
    got: dict[str, list[float]] = {}

    def measure(way: str, _rep: int) -> dict:
        t0 = time.perf_counter()
        got[way] = per_pair_baseline(model, ds, people) if way == "baseline" else \
            gradient_consistency(model, ds, people).per_pair
        return {"wall_s": time.perf_counter() - t0}

    res = {"benchmark": "gradient_consistency", "model": args.model, "people": len(people),
           "pairs": len(_pair_examples(model.tokenizer, ds, people)),
           "baseline": "a forward pass per (person, attribute) pair", "ours": "one forward pass per biography",
           **alternate(args.repeats, measure)}
    res["max_abs_diff"] = max(abs(a - b) for a, b in zip(got["baseline"], got["ours"]))
    res["environment"] = environment()
    write_result(args.out, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
