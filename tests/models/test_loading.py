import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

from recall_circuits.errors import RecallCircuitsError
from recall_circuits.models.loading import check_same_architecture, load_bridge, load_pair
from recall_circuits.models.registry import build_tiny, resolve_model

from helpers import ARCHS


@pytest.mark.parametrize("arch", ARCHS)
def test_bridge_logits_equal_hf(arch, tiny_dirs, bridges):
    hf = AutoModelForCausalLM.from_pretrained(tiny_dirs[arch], attn_implementation="eager").eval()
    toks = torch.randint(4, 500, (3, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (bridges[arch](toks) - hf(toks).logits).abs().max().item()
    assert diff <= 1e-4
    assert not bridges[arch].training


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecallCircuitsError, match="not a checkpoint directory"):
        resolve_model(tmp_path / "empty")
    with pytest.raises(RecallCircuitsError, match="unknown model"):
        resolve_model(tmp_path / "missing")


def test_mismatched_pair(tiny_dirs, tmp_path):
    with pytest.raises(RecallCircuitsError, match="differ"):
        load_pair(tiny_dirs["tiny-llama"], tiny_dirs["tiny-neox"])
    # same architecture, different shapes
    big = tmp_path / "wide"
    shutil.copytree(tiny_dirs["tiny-llama"], big)
    cfg = json.loads((big / "config.json").read_text())
    cfg["intermediate_size"] = 96
    hf = AutoModelForCausalLM.from_config(type(AutoModelForCausalLM.from_pretrained(big).config).from_dict(cfg))
    hf.save_pretrained(big)
    with pytest.raises(RecallCircuitsError, match="shape"):
        load_pair(tiny_dirs["tiny-llama"], big)


def test_pair_ok(tiny_dirs, tmp_path):
    other = build_tiny("tiny-gpt2", tmp_path / "g", seed=1)
    pair = load_pair(tiny_dirs["tiny-gpt2"], other)
    check_same_architecture(pair.base, pair.finetuned)
    assert not torch.equal(pair.base.blocks[0].attn.W_Q, pair.finetuned.blocks[0].attn.W_Q)


def test_no_network_anywhere(no_network, tiny_dirs, tiny_data):
    """The guard is active for the whole session: loading, data, bridges; nothing was attempted."""
    from recall_circuits.data.bios import load_dataset
    from recall_circuits.models.loading import load_hf
    from recall_circuits.training.evaluation import evaluate

    for arch in ARCHS:
        load_bridge(tiny_dirs[arch])
    model, tok = load_hf(tiny_dirs["tiny-neox"])
    evaluate(model, tok, load_dataset(tiny_data))
    assert no_network == []
    import socket

    with pytest.raises(Exception, match="network access attempted"):
        socket.create_connection(("127.0.0.1", 9))
    no_network.clear()


def test_gradients_for_restores_the_model_even_on_an_error(bridges):
    from recall_circuits.models.loading import gradients_for

    model = bridges["tiny-llama"]
    first = next(model.parameters())
    first.requires_grad_(True)                       # a state of the caller's, kept through the block
    before = [p.requires_grad for p in model.parameters()]
    chosen = [p for p in model.parameters()][1:3]
    with pytest.raises(ZeroDivisionError):
        with gradients_for(model, chosen):
            assert [p.requires_grad for p in model.parameters()] == [any(p is c for c in chosen)
                                                                      for p in model.parameters()]
            model(torch.tensor([[1, 2, 3]])).sum().backward()
            assert all(p.grad is not None for p in chosen)
            1 / 0
    assert [p.requires_grad for p in model.parameters()] == before and all(p.grad is None for p in chosen)
    first.requires_grad_(False)
