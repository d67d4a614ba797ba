"""Known answers: a model whose recall is made, by construction, to live in two chosen heads.

The plant: in a tiny random model every attention head but the chosen two (layer 1, heads 0 and 1: one key/value
group under GQA) is silenced (its value and output slices, value bias included, set to zero), which is the
"pretrained" model; then only the chosen heads' slices are fine-tuned, on BIO and QA, which is the "fine-tuned"
model. A silenced head writes nothing, so no loss has a gradient in its slices and patching it changes nothing;
the chosen heads carry everything the fine-tuning learned. Every analysis must find them:

- the gradient trace's shared set lands in the chosen heads only, and the Shared-Size ranking puts them first;
- restoring the chosen heads to their pretrained slices takes the answers' log-probability back to the pretrained
  model's, while restoring two other heads changes nothing;
- exact activation patching and attribution patching rank a chosen head first and give every other head nothing.

The same checks with the effect removed (another pair of heads claimed) fail:
:func:`test_the_checks_fail_on_the_wrong_heads`.
"""

import copy

import pytest
import torch

from recall_circuits.attribution.shared import count_per_query_head, shared_mask
from recall_circuits.attribution.trace import TraceConfig, cross_task_trace
from recall_circuits.data.bios import load_dataset
from recall_circuits.interventions.patching import (
    attribution_patch_heads,
    logit_diff_metric,
    patch_heads_by_pos,
    qa_patching_pairs,
)
from recall_circuits.interventions.restore import restore_heads
from recall_circuits.models.loading import load_bridge
from recall_circuits.models.params import ATTN_VIEWS, ParamSpace, kv_group
from recall_circuits.training.loop import token_loss_sum, tokenize_dataset

from helpers import answer_logprob_reference as _logprob

CHOSEN = [(1, 0), (1, 1)]
OTHERS = [(0, 2), (1, 3)]
STEPS = 800                  # with LR: every plant tells most of its ID pairs apart, at 1 to 4 torch threads
LR = 1e-2
PLANT_ARCHS = ("tiny-gpt2", "tiny-neox", "tiny-llama")


def _silence_all_but(model, live):
    """Zero the value (and value-bias) slices of every key/value group with no live head, and the output slice of
    every head that is not live."""
    space = ParamSpace(model, include=("attn",), biases=True)
    params = space.params()
    flat = space.flatten(params).clone()
    L, H = model.cfg.n_layers, model.cfg.n_heads
    for layer in range(L):
        live_groups = {kv_group(model, h) for (ly, h) in live if ly == layer}
        for head in range(H):
            if (layer, head) not in live:
                flat[space.head_flat_indices(layer, head, "O")] = 0
            g = kv_group(model, head)
            if g not in live_groups:
                flat[space.head_flat_indices(layer, head, "V")] = 0
                bias = f"blocks.{layer}.{ATTN_VIEWS['V'][3]}"
                if bias in space.by_name:
                    flat[space.unit_indices(layer, "b_V")[g] + space.by_name[bias].offset] = 0
    with torch.no_grad():
        for name, t in space.unflatten(flat).items():
            params[name].copy_(t)
    return space


def _live_mask(model, live):
    """1 on the live heads' Q, K, V, O slices (and their Q/K/V biases), 0 elsewhere, per parameter."""
    space = ParamSpace(model, include=("attn",), biases=True)
    flat = torch.zeros(space.P)
    for layer, head in live:
        for comp in "QKVO":
            flat[space.head_flat_indices(layer, head, comp)] = 1
        for b in ("b_Q", "b_K", "b_V"):
            view, name, _ = space._view_and_param(layer, b)
            if view is not None and f"blocks.{layer}.{name}" in space.by_name:
                unit = kv_group(model, head) if b != "b_Q" else head
                flat[space.unit_indices(layer, b)[unit] + space.by_name[f"blocks.{layer}.{name}"].offset] = 1
    sd = model.state_dict(keep_vars=True)
    return {id(sd[n]): m for n, m in space.unflatten(flat).items()}


@pytest.fixture(scope="module", params=PLANT_ARCHS)
def planted(request, tiny_dirs, tiny_data):
    return plant(request.param, tiny_dirs[request.param], tiny_data)


def plant(arch, model_dir, data_dir):
    """(arch, pretrained, fine-tuned, dataset): the model with every head but CHOSEN silenced, and its fine-tuning."""
    pre = load_bridge(model_dir)
    _silence_all_but(pre, CHOSEN)
    ft = copy.deepcopy(pre)
    masks = _live_mask(ft, CHOSEN)
    ds = load_dataset(data_dir)
    bio, qa = tokenize_dataset(ft.tokenizer, ds)
    from recall_circuits.training.loop import _collate

    hf = ft.original_model
    hf.eval()                     # no dropout: the plant is the same on every run
    torch.manual_seed(0)
    for p in hf.parameters():
        p.requires_grad_(True)
    params = [p for p in hf.parameters() if id(p) in masks]
    opt = torch.optim.Adam(params, lr=LR)
    g = torch.Generator().manual_seed(0)
    items = bio + qa
    for step in range(STEPS):
        batch = [items[i] for i in torch.randint(0, len(items), (8,), generator=g).tolist()]
        loss, n = token_loss_sum(hf, _collate(batch, ft.tokenizer.pad_token_id))
        opt.zero_grad(set_to_none=True)
        (loss / n).backward()
        for p in hf.parameters():
            if id(p) in masks:
                p.grad.mul_(masks[id(p)])
            else:
                p.grad = None
        opt.step()
    for p in hf.parameters():
        p.requires_grad_(False)
    hf.eval()
    ft.eval()
    return arch, pre, ft, ds


def _trace_ranking(ft, ds):
    res = cross_task_trace(ft, ds, TraceConfig(n_people=4, split="id", include=("attn",)))
    space = res.space
    k = space.P // 10          # below the live heads' entries (a quarter of the attention weights or more)
    mask = shared_mask(res.influence["bio"], res.influence["qa"], k)
    per_head = count_per_query_head(space, space.unflatten(mask.float()))
    order = sorted(((float(per_head[l, h]), (l, h)) for l in range(per_head.shape[0])
                    for h in range(per_head.shape[1])), reverse=True)
    return per_head, [lh for _, lh in order]


def _patching_scores(ft, ds):
    """Over the pairs whose clean and corrupted prompts the plant tells apart (patching can only find an effect
    where there is one): per head, the largest change of the metric over positions, summed over pairs."""
    exact, attr, used = 0, 0, 0
    for p in qa_patching_pairs(ft.tokenizer, ds, 12, "id"):
        clean, corr = torch.tensor([p["clean"]]), torch.tensor([p["corrupted"]])
        metric = logit_diff_metric(torch.tensor([p["correct"]]), torch.tensor([p["wrong"]]))
        with torch.no_grad():
            base_value = metric(ft(corr)[:, -1]).mean()
            if abs(float(metric(ft(clean)[:, -1]).mean() - base_value)) < 0.05:
                continue
        exact = exact + (patch_heads_by_pos(ft, clean, corr, metric) - base_value).abs().amax(1)
        attr = attr + attribution_patch_heads(ft, clean, corr, metric).abs().amax(1)
        used += 1
        if used == 4:
            break
    assert used >= 2, "the plant tells too few prompts apart to patch"
    return exact, attr


def _ranked(score):
    L, H = score.shape
    return [lh for _, lh in sorted(((float(score[l, h]), (l, h)) for l in range(L) for h in range(H)), reverse=True)]


@pytest.mark.slow
def test_restoring_the_chosen_heads_undoes_the_fine_tuning_and_other_heads_do_not(planted):
    arch, pre, ft, ds = planted
    before, pretrained = _logprob(ft, ds, "id"), _logprob(pre, ds, "id")
    assert before > pretrained + 0.5, (arch, before, pretrained)      # the plant learned something
    with restore_heads(ft, pre, CHOSEN):
        assert _logprob(ft, ds, "id") == pytest.approx(pretrained, abs=1e-6)
    with restore_heads(ft, pre, OTHERS):
        assert _logprob(ft, ds, "id") == pytest.approx(before, abs=1e-9)


def test_shared_set_and_shared_size_ranking_find_the_chosen_heads(planted):
    arch, pre, ft, ds = planted
    per_head, order = _trace_ranking(ft, ds)
    assert set(order[:2]) == set(CHOSEN), (arch, per_head)
    assert all(per_head[l, h] == 0 for l in range(per_head.shape[0]) for h in range(per_head.shape[1])
               if (l, h) not in CHOSEN)
    assert all(per_head[l, h] > 0 for l, h in CHOSEN)


def test_exact_and_attribution_patching_rank_the_chosen_heads_first(planted):
    arch, pre, ft, ds = planted
    exact, attr = _patching_scores(ft, ds)
    for score in (exact, attr):
        # every head with an effect is a chosen one, and the first of the ranking is (a plant may route recall
        # through one of its two heads only: the other then scores nothing, like the silenced ones)
        found = {(l, h) for l in range(score.shape[0]) for h in range(score.shape[1]) if score[l, h] != 0}
        assert found and found <= set(CHOSEN), (arch, score)
        assert _ranked(score)[0] in CHOSEN


def test_the_checks_fail_on_the_wrong_heads(planted):
    """With the effect claimed for two other heads, the same checks must not pass."""
    arch, pre, ft, ds = planted
    _, order = _trace_ranking(ft, ds)
    assert set(order[:2]) != set(OTHERS)
    exact, _ = _patching_scores(ft, ds)
    assert set(_ranked(exact)[:2]) != set(OTHERS)
    with restore_heads(ft, pre, OTHERS):
        assert _logprob(ft, ds, "id") != pytest.approx(_logprob(pre, ds, "id"), abs=1e-6)
