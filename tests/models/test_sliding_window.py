"""Patching on a decoder whose attention has a sliding window shorter than the prompt: its key/value cache keeps
only the window's last positions, so a cached prefix would be wrong; patching must stay exact (TransformerLens's own
patching is the reference)."""

import pytest
import torch
import transformer_lens.patching as tlp

from recall_circuits.interventions.patching import logit_diff_metric, patch_heads_by_pos, patch_resid_by_pos
from recall_circuits.models.loading import load_bridge

WINDOW = 8


@pytest.fixture(scope="module")
def sliding(tmp_path_factory):
    from transformers import AutoModelForCausalLM, MistralConfig

    from recall_circuits.models.registry import build_word_tokenizer

    tok = build_word_tokenizer()
    cfg = MistralConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, intermediate_size=128, max_position_embeddings=256,
                        sliding_window=WINDOW, bos_token_id=2, eos_token_id=3, pad_token_id=1)
    out = tmp_path_factory.mktemp("mistral")
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).save_pretrained(out)
    tok.save_pretrained(out)
    return load_bridge(out)


def _prompts(T):
    g = torch.Generator().manual_seed(1)
    clean = torch.randint(4, 300, (1, T), generator=g)
    corrupted = clean.clone()
    corrupted[:, T // 2] = (clean[:, T // 2] + 7) % 300 + 4
    return clean, corrupted


@pytest.mark.parametrize("T", [6, 13])      # shorter than the window, and longer
def test_patching_is_exact_with_a_window_shorter_than_the_prompt(sliding, T):
    model = sliding
    clean, corr = _prompts(T)
    metric = logit_diff_metric(torch.tensor([5]), torch.tensor([7]))
    with torch.no_grad():
        _, cache = model.run_with_cache(clean)
        ref = tlp.get_act_patch_attn_head_out_by_pos(model, corr, cache, lambda lg: metric(lg[:, -1]).mean())
        ref_resid = tlp.get_act_patch_resid_pre(model, corr, cache, lambda lg: metric(lg[:, -1]).mean())
    ours = patch_heads_by_pos(model, clean, corr, metric, cells_per_batch=4)
    assert (ours - ref.cpu()).abs().max() <= 1e-4
    assert (patch_resid_by_pos(model, clean, corr, metric) - ref_resid.cpu()).abs().max() <= 1e-4
