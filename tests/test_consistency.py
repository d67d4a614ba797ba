import pytest
import torch

from recall_circuits.consistency import (_pair_examples, gradient_consistency, input_signature, linear_cka,
                                         representation_consistency)
from recall_circuits.data import DataConfig, generate
from recall_circuits.heads import ParamSpace
from recall_circuits.trace import pad_batch, per_example_loss

DS = generate(DataConfig(n_people=4, seed=0))


def test_gradient_consistency_by_hand(bridges):
    model = bridges["tiny-neox"]
    res = gradient_consistency(model, DS, [0])
    space = ParamSpace(model)
    params = space.params(model)
    bio, qa, _ = _pair_examples(model.tokenizer, DS, [0])[0]
    grads = []
    for ex in (bio, qa):
        for p in params.values():
            p.requires_grad_(True)
            p.grad = None
        ids, labels, _ = pad_batch([ex], 0)
        per_example_loss(model(ids), labels).sum().backward()
        grads.append(space.flatten({k: p.grad for k, p in params.items()}))
        for p in params.values():
            p.requires_grad_(False)
    ref = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)
    assert res["per_pair"][0] == pytest.approx(float(ref), abs=1e-5)
    assert res["n_pairs"] == 6 and set(res["per_module"]) == {"L0.attn", "L0.mlp", "L1.attn", "L1.mlp"}
    assert all(not p.requires_grad for p in model.parameters())


def test_linear_cka_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 8, generator=g)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3 * x @ q) == pytest.approx(1.0)
    assert linear_cka(x, torch.randn(30, 8, generator=g)) < 0.6


def test_representation_consistency_by_hand(bridges):
    model = bridges["tiny-llama"]
    res = representation_consistency(model, DS, [0, 1])
    from recall_circuits.attention import aligned_pairs

    cos = []
    for p in aligned_pairs(model.tokenizer, DS, [0, 1]):
        vecs = []
        for f in ("bio", "qa"):
            _, cache = model.run_with_cache(torch.tensor([p[f]["ids"]]))
            vecs.append(cache["blocks.1.hook_resid_post"][0, p[f]["pos"]])
        cos.append(float(torch.nn.functional.cosine_similarity(vecs[0], vecs[1], dim=0)))
    assert res["n_pairs"] == 12 and len(res["cosine"]) == 2
    assert res["cosine"][1] == pytest.approx(sum(cos) / len(cos), abs=1e-5)
    assert 0 <= min(res["retrieval_acc"]) and max(res["retrieval_acc"]) <= 1


def test_input_signature(bridges):
    res = input_signature(bridges["tiny-gpt2"], DS, [0, 1])
    assert res["n_facts"] == 12 and all(0 <= s <= 1 for s in res["per_fact"])
    assert all(not p.requires_grad for p in bridges["tiny-gpt2"].parameters())


def test_consistency_script_bad_input(tiny_data, tmp_path, capsys):
    from analyses.consistency import main

    assert main(["--model", "nopath", "--data", str(tiny_data), "--out", str(tmp_path / "c")]) == 2
    assert "NAME=PATH" in capsys.readouterr().err
    assert main(["--data", str(tiny_data), "--out", str(tmp_path / "c")]) == 2
    assert "no models" in capsys.readouterr().err
