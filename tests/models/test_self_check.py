"""Loading a checkpoint into the bridge checks that the bridge computes what the Hugging Face model computes;
loading failures and checkpoints without a tokenizer are one-line errors."""

import logging
import shutil

import pytest
import torch

from recall_circuits.errors import RecallCircuitsError
from recall_circuits.models import loading


@pytest.mark.parametrize("arch", ["tiny-llama", "tiny-gpt2", "tiny-gemma"])
def test_a_faithful_bridge_passes_and_a_wrong_one_is_refused(arch, tiny_dirs, monkeypatch, caplog):
    from transformer_lens.model_bridge import TransformerBridge

    good = loading.load_bridge(tiny_dirs[arch])
    assert loading.check_bridge(good, tiny_dirs[arch]) <= loading.SELF_CHECK_TOL[torch.float32]
    boot = TransformerBridge.boot_transformers

    def wrong(*args, **kwargs):      # a bridge that computes something else than the checkpoint's model
        b = boot(*args, **kwargs)
        with torch.no_grad():
            b.original_model.get_output_embeddings().weight.mul_(1.5)
        return b
    monkeypatch.setattr(TransformerBridge, "boot_transformers", wrong)
    with pytest.raises(RecallCircuitsError, match=r"\(\w+\): the TransformerBridge computes other logits"):
        loading.load_bridge(tiny_dirs[arch])
    with caplog.at_level(logging.WARNING):
        assert loading.load_bridge(tiny_dirs[arch], on_mismatch="warn") is not None
    assert "computes other logits" in caplog.text
    assert loading.load_bridge(tiny_dirs[arch], on_mismatch="off") is not None


def test_loading_failures_are_one_line(tiny_dirs, tmp_path, monkeypatch):
    from transformer_lens.model_bridge import TransformerBridge

    def broken(*args, **kwargs):
        raise RuntimeError("shape '[1, 8, 2, 16]' is invalid for input of size 512\nmore lines")
    monkeypatch.setattr(TransformerBridge, "boot_transformers", broken)
    with pytest.raises(RecallCircuitsError, match=r"could not load .* \(LlamaForCausalLM\) into a TransformerBridge: "
                                                  r"RuntimeError: shape") as exc:
        loading.load_bridge(tiny_dirs["tiny-llama"])
    assert "\n" not in str(exc.value)
    monkeypatch.undo()
    bare = tmp_path / "bare"      # a checkpoint saved without its tokenizer
    shutil.copytree(tiny_dirs["tiny-llama"], bare)
    for f in bare.glob("*token*"):
        f.unlink()
    for f in bare.glob("special_tokens_map.json"):
        f.unlink()
    with pytest.raises(RecallCircuitsError, match="has no usable tokenizer .*tokenizer.save_pretrained") as exc:
        loading.load_tokenizer(bare)
    assert "\n" not in str(exc.value)
