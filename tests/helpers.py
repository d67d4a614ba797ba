"""What several test modules share: the repository root, the tiny architectures every per-architecture test runs
on, and slow, obviously-correct references (head slices read off the raw Hugging Face layout by hand, the answer
log-probability one question at a time). Test modules import from here, never from each other."""

from __future__ import annotations

from pathlib import Path

import torch

from recall_circuits.data.bios import tokenize_qa

ROOT = Path(__file__).resolve().parents[1]
ARCHS = ("tiny-gpt2", "tiny-neox", "tiny-llama", "tiny-gemma", "tiny-phi", "tiny-mistral", "tiny-qwen3", "tiny-falcon")


def hand_slices(hf, arch, layer, head):
    """Head slices read off the raw HF layout by hand (tl4-notes §2.6), as [d_model, d_head] / [d_head, d_model]."""
    cfg = hf.config
    dm, nh = cfg.hidden_size if hasattr(cfg, "hidden_size") else cfg.n_embd, cfg.num_attention_heads
    dh = dm // nh
    if arch == "tiny-gpt2":
        a = hf.transformer.h[layer].attn
        w = a.c_attn.weight  # Conv1D [in, out]
        return {"Q": w[:, head * dh:(head + 1) * dh], "K": w[:, dm + head * dh: dm + (head + 1) * dh],
                "V": w[:, 2 * dm + head * dh: 2 * dm + (head + 1) * dh],
                "O": a.c_proj.weight[head * dh:(head + 1) * dh]}
    if arch == "tiny-neox":
        a = hf.gpt_neox.layers[layer].attention
        w = a.query_key_value.weight.view(nh, 3, dh, dm)
        return {"Q": w[head, 0].T, "K": w[head, 1].T, "V": w[head, 2].T,
                "O": a.dense.weight[:, head * dh:(head + 1) * dh].T}
    if arch == "tiny-falcon":                 # multi-query fused QKV: every query head, then one K, then one V
        a = hf.transformer.h[layer].self_attention
        w = a.query_key_value.weight            # [(n_heads + 2) * d_head, d_model]
        return {"Q": w[head * dh:(head + 1) * dh].T, "K": w[nh * dh:(nh + 1) * dh].T,
                "V": w[(nh + 1) * dh:(nh + 2) * dh].T, "O": a.dense.weight[:, head * dh:(head + 1) * dh].T}
    a = hf.model.layers[layer].self_attn      # Llama, Gemma (one key/value head), Phi (output projection "dense")
    kv = head // (nh // (cfg.num_key_value_heads or nh))
    out = a.dense if arch == "tiny-phi" else a.o_proj
    return {"Q": a.q_proj.weight[head * dh:(head + 1) * dh].T, "K": a.k_proj.weight[kv * dh:(kv + 1) * dh].T,
            "V": a.v_proj.weight[kv * dh:(kv + 1) * dh].T, "O": out.weight[:, head * dh:(head + 1) * dh].T}


def answer_logprob_reference(model, ds, split):
    """Mean over questions of log P(answer | prompt), one question at a time (the slow reference)."""
    total, n = 0.0, 0
    with torch.no_grad():
        for e in ds.qa(split):
            t = tokenize_qa(model.tokenizer, e)
            ids = torch.tensor([t["input_ids"]])
            lp = model(ids)[0].double().log_softmax(-1)
            total += float(sum(lp[p - 1, ids[0, p]] for p in t["answer_pos"]))
            n += 1
    return total / n
