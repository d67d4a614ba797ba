import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from recall_circuits.attribution.shared import count_per_head, count_per_neuron, count_per_query_head
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.models.params import COMPONENTS, ParamSpace, head_views, kv_group, query_heads_of_group

from helpers import ARCHS, hand_slices


@pytest.mark.parametrize("arch", ARCHS)
def test_head_slices_match_raw_layout(arch, tiny_dirs, bridges):
    hf = AutoModelForCausalLM.from_pretrained(tiny_dirs[arch])
    b = bridges[arch]
    space = ParamSpace(b)
    flat = space.flatten(space.params())
    for layer in range(b.cfg.n_layers):
        for head in range(b.cfg.n_heads):
            hand = hand_slices(hf, arch, layer, head)
            views = head_views(b, layer, head)
            for comp in COMPONENTS:
                assert torch.equal(views[f"W_{comp}"], hand[comp])
                idx = space.head_flat_indices(layer, head, comp)
                assert torch.equal(flat[idx].view(hand[comp].shape), hand[comp])


@pytest.mark.parametrize("arch", ARCHS)
def test_flat_index_round_trip(arch, bridges):
    b = bridges[arch]
    space = ParamSpace(b, biases=True)
    seen = torch.zeros(space.P, dtype=torch.long)
    for layer in range(b.cfg.n_layers):
        for head in range(b.cfg.n_heads):
            for comp in COMPONENTS:
                idx = space.head_flat_indices(layer, head, comp)
                for j in (0, len(idx) // 2, len(idx) - 1):
                    loc = space.locate(int(idx[j]))
                    unit = kv_group(b, head) if comp in "KV" else head
                    assert (loc.layer, loc.component, loc.unit) == (layer, comp, unit)
                    assert loc.tensor == f"blocks.{layer}.attn.{comp.lower()}.weight"
                if comp in "QO" or head in [query_heads_of_group(b, g)[0] for g in range(space.n_kv_heads)]:
                    seen[idx] += 1
        d_mlp = b.blocks[layer].mlp.W_out.shape[0]
        for n in (0, d_mlp - 1):
            idx = space.neuron_flat_indices(layer, n)
            assert {space.locate(int(i)).unit for i in idx[:: max(1, len(idx) // 7)]} == {n}
            seen[idx] += 1
    # every attention/MLP weight entry belongs to exactly one head-or-KV-group slice (sampled neurons aside)
    attn_weight = torch.cat([torch.arange(i.offset, i.offset + i.numel) for i in space.infos
                             if i.module == "attn" and i.name.endswith(".weight")])
    assert (seen[attn_weight] == 1).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_count_per_head_by_hand(arch, tiny_dirs, bridges):
    b = bridges[arch]
    space = ParamSpace(b)
    g = torch.Generator().manual_seed(1)
    masks = {i.name: torch.rand(i.shape, generator=g) < 0.3 for i in space.infos}
    counts = count_per_head(space, masks)
    for layer in range(b.cfg.n_layers):
        for head in range(b.cfg.n_heads):
            # the mask in the bridge's layout, read through a head view of a mask-valued copy of the weights
            for comp in COMPONENTS:
                idx = space.head_flat_indices(layer, head, comp)
                expected = space.flatten(masks)[idx].sum()
                unit = kv_group(b, head) if comp in "KV" else head
                assert counts[comp][layer, unit] == expected
    total = sum(c.sum() for c in counts.values())
    assert total == sum(m.sum() for n, m in masks.items() if ".attn." in n)
    split = count_per_query_head(space, masks, gqa="split")
    assert torch.isclose(split.sum(), total)
    per_neuron = count_per_neuron(space, masks)
    assert per_neuron.sum() == sum(m.sum() for n, m in masks.items() if ".mlp." in n)
    with pytest.raises(RecallCircuitsError, match="shape"):
        count_per_head(space, {**masks, space.infos[0].name: torch.zeros(3)})


@pytest.mark.parametrize("arch", ARCHS)
def test_writing_head_view_changes_forward_as_expected(arch, bridges):
    """Copying another model's head slices in through the views: the same forward as editing the HF weights."""
    base = bridges[arch]
    ft = copy.deepcopy(base)
    toks = torch.randint(4, 500, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for comp in COMPONENTS:  # perturb head (1, 2) and, under GQA, its KV group
            v = head_views(ft, 1, 2, (comp,), biases=False)[f"W_{comp}"]
            v.add_(torch.randn_like(v) * 0.5)
        ref = base(toks)
        changed = ft(toks)
        assert (changed - ref).abs().max() > 1e-3
        saved = {k: v.clone() for k, v in ft.state_dict().items()}
        for head in range(base.cfg.n_heads):  # restoring an untouched head (not sharing the KV group) changes nothing
            if kv_group(base, head) == kv_group(base, 2):
                continue
            for name, v in head_views(ft, 1, head).items():
                v.copy_(head_views(base, 1, head)[name])
            assert torch.equal(ft(toks), changed)
        for name, v in head_views(ft, 1, 2).items():  # restoring the edited head gives the base forward back
            v.copy_(head_views(base, 1, 2)[name])
        assert (ft(toks) - ref).abs().max() <= 1e-6
        for k, v in ft.state_dict().items():
            if not k.startswith("blocks.1.attn"):
                assert torch.equal(v, saved[k])


def test_head_out_of_range(bridges):
    with pytest.raises(RecallCircuitsError, match="out of range"):
        head_views(bridges["tiny-llama"], 0, 9)
    with pytest.raises(RecallCircuitsError, match="out of range"):
        ParamSpace(bridges["tiny-llama"]).head_flat_indices(5, 0, "Q")
