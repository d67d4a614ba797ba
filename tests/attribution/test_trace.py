
import weakref

import pytest
import torch
from transformers import AutoModelForCausalLM

from recall_circuits.attribution import trace as trace_mod
from recall_circuits.attribution.shared import (
    count_per_query_head,
    count_per_tensor,
    head_stats,
    random_like_mask,
    shared_curve,
    shared_mask,
    top_k_mask,
)
from recall_circuits.attribution.trace import (
    TraceConfig,
    cross_task_trace,
    packing_works,
    select_people,
    task_examples,
    trace_gradients,
    trace_gradients_loop,
    transpose_into,
)
from recall_circuits.data.bios import DataConfig, PackedBatch, generate, length_batches, pack_batch
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.interventions.restore import restore_heads, restore_params
from recall_circuits.models.loading import load_bridge
from recall_circuits.models.params import COMPONENTS, ParamSpace, kv_group, query_heads_of_group
from recall_circuits.models.registry import build_tiny

from helpers import ARCHS, hand_slices

DS = generate(DataConfig(n_people=8, seed=0))


@pytest.fixture(scope="module")
def bridges64(tiny_dirs):
    return {a: load_bridge(tiny_dirs[a], dtype="float64") for a in ARCHS}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("mode", ["sum_abs", "abs_of_sum", "sq_sum"])
def test_trace_equals_per_example_loop(arch, mode, bridges64):
    b = bridges64[arch]
    space = ParamSpace(b, biases=arch != "tiny-llama")
    people = select_people(DS, 3, "id")
    # "attribute" BIO labels end before the text does: the trace stops at each example's last label position
    for task, bio_loss in (("qa", "all"), ("bio", "all"), ("bio", "attribute")):
        ex = task_examples(b.tokenizer, DS, task, people, bio_loss)
        fast = trace_gradients(b, ex, space, mode=mode, batch_size=5, pad_id=b.tokenizer.pad_token_id)
        ref = trace_gradients_loop(b, ex, space, mode=mode)
        assert fast.dtype == torch.float64 and ref.abs().max() > 0
        assert ((fast - ref).abs().max() / ref.abs().max()).item() <= 1e-5
        if mode == "sum_abs":   # padded batches instead of packed rows
            padded = trace_gradients(b, ex, space, batch_size=5, pad_id=b.tokenizer.pad_token_id, pack=None)
            assert ((padded - ref).abs().max() / ref.abs().max()).item() <= 1e-5
    assert all(not p.requires_grad for p in b.parameters())


def test_trace_float32_accumulation_and_batch_invariance(bridges):
    b = bridges["tiny-neox"]
    space = ParamSpace(b)
    ex = task_examples(b.tokenizer, DS, "qa", select_people(DS, 4, "all"), "all")
    a = trace_gradients(b, ex, space, batch_size=1, pad_id=b.tokenizer.pad_token_id, pack=None)
    assert a.dtype == torch.float32
    for mp in (None, 0.0, 0.1):   # fixed batches (most padding), equal-length batches only, the default cut
        assert len(length_batches([len(e["input_ids"]) for e in ex], 7, mp)) >= 2
        c = trace_gradients(b, ex, space, batch_size=7, pad_id=b.tokenizer.pad_token_id, max_padding=mp, pack=None)
        assert ((a - c).abs().max() / a.abs().max()).item() <= 1e-5
    for per_row, row_tokens in ((1, 128), (3, 128), (7, 10_000), (24, 10_000), (24, 1)):
        # one example a row, packed rows, everything in one row, the row budget forcing one a row
        c = trace_gradients(b, ex, space, batch_size=24, pad_id=b.tokenizer.pad_token_id, pack=per_row,
                            row_tokens=row_tokens)
        assert ((a - c).abs().max() / a.abs().max()).item() <= 1e-5


def test_pack_batch():
    items = [{"input_ids": list(range(100 * i, 100 * i + n)), "labels": [7] * n} for i, n in
             enumerate([5, 9, 3, 9, 4, 6, 2])]
    for per_row in (1, 2, 3, 7):
        pb = pack_batch(items, per_row, pad_id=-1)
        rows = pb.input_ids.shape[0]
        assert rows == -(-len(items) // per_row) and pb.input_ids.shape[1] == max(
            sum(n for r, _, n in pb.spans if r == row) for row in range(rows))
        seen = torch.zeros_like(pb.input_ids, dtype=torch.bool)
        for i, (r, s, n) in enumerate(pb.spans):
            assert pb.input_ids[r, s:s + n].tolist() == items[i]["input_ids"]      # each example whole, in place
            assert pb.position_ids[r, s:s + n].tolist() == list(range(n))
            assert pb.labels[r, s].item() == -100 and pb.labels[r, s + 1:s + n].tolist() == [7] * (n - 1)
            assert (pb.segment[r, s:s + n] == i).all() and not seen[r, s:s + n].any()
            seen[r, s:s + n] = True
        assert all(sum(1 for r, _, _ in pb.spans if r == row) <= per_row for row in range(rows))
        assert (pb.input_ids[~seen] == -1).all() and (pb.labels[~seen] == -100).all()
        pad_seg = pb.segment[~seen]
        assert (pad_seg < 0).all()
        m = pb.attention_mask(torch.float32)[:, 0]
        keep = m == 0
        for r in range(rows):   # causal within an example, nothing across, padding sees itself only
            for q in range(m.shape[1]):
                for k in range(m.shape[2]):
                    same = pb.segment[r, q] == pb.segment[r, k]
                    assert keep[r, q, k].item() == bool(same and k <= q)
    with pytest.raises(RecallCircuitsError, match="empty"):
        pack_batch([], 2, 0)
    with pytest.raises(RecallCircuitsError, match="per_row"):
        pack_batch(items, 0, 0)


def test_the_packing_check_runs_once_per_model(tiny_dirs, monkeypatch):
    b = load_bridge(tiny_dirs["tiny-llama"])
    space = ParamSpace(b)
    ex = task_examples(b.tokenizer, DS, "qa", select_people(DS, 2, "all"), "all")
    calls = []
    real = trace_mod.packing_works
    monkeypatch.setattr(trace_mod, "packing_works", lambda *a: calls.append(1) or real(*a))
    first = trace_gradients(b, ex, space, batch_size=4, pad_id=b.tokenizer.pad_token_id)
    assert torch.equal(trace_gradients(b, ex, space, batch_size=4, pad_id=b.tokenizer.pad_token_id), first)
    assert len(calls) == 1
    trace_gradients(load_bridge(tiny_dirs["tiny-llama"]), ex, space, batch_size=4, pad_id=b.tokenizer.pad_token_id)
    assert len(calls) == 2                       # another model object is checked again


def test_packing_check_catches_examples_that_see_each_other(tiny_dirs, monkeypatch, caplog):
    b = load_bridge(tiny_dirs["tiny-llama"])
    space = ParamSpace(b)
    ex = task_examples(b.tokenizer, DS, "qa", select_people(DS, 2, "all"), "all")

    def causal_only(self, dtype):   # a mask that lets packed examples attend to each other
        n = self.segment.shape[1]
        keep = torch.ones(n, n, dtype=torch.bool).tril().expand(self.segment.shape[0], n, n)
        return torch.zeros(keep.shape, dtype=dtype).masked_fill_(~keep, torch.finfo(dtype).min)[:, None]

    padded = trace_gradients(b, ex, space, batch_size=4, pad_id=b.tokenizer.pad_token_id, pack=None)
    packed = trace_gradients(b, ex, space, batch_size=4, pad_id=b.tokenizer.pad_token_id)
    assert packed.abs().max() > 0 and torch.allclose(packed, padded, rtol=1e-5, atol=1e-7)
    assert not any("pads its batches" in r.message for r in caplog.records)
    monkeypatch.setattr(PackedBatch, "attention_mask", causal_only)
    assert not packing_works(b, ex[:3], b.tokenizer.pad_token_id)
    # the check is remembered per model object; here the packing code changed under the same object
    monkeypatch.setattr(trace_mod, "_PACKING_OK", weakref.WeakKeyDictionary())
    with caplog.at_level("INFO", logger="recall_circuits.attribution.trace"):
        fallback = trace_gradients(b, ex, space, batch_size=4, pad_id=b.tokenizer.pad_token_id)
    assert any("does not keep packed examples apart" in r.message for r in caplog.records)
    assert torch.equal(fallback, padded)        # the fallback is the padded trace, not the broken packed one
    monkeypatch.undo()
    with pytest.raises(RecallCircuitsError, match="pack must be"):
        trace_gradients(b, ex, space, pad_id=b.tokenizer.pad_token_id, pack=0)
    with pytest.raises(RecallCircuitsError, match="batch_size"):
        trace_gradients(b, ex, space, batch_size=0, pad_id=b.tokenizer.pad_token_id)


def test_length_batches():
    lengths = [28, 17, 20, 26, 17, 19, 22, 18, 17, 20, 26, 18]
    for bs, mp in ((16, None), (16, 0.1), (4, 0.1), (3, 0.0), (1, None)):
        batches = length_batches(lengths, bs, mp)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(len(lengths)))                      # every example once
        assert [lengths[i] for i in flat] == sorted(lengths)                  # in length order
        assert all(1 <= len(b) <= bs for b in batches)
        if mp is not None:
            for b in batches:
                real = sum(lengths[i] for i in b)
                assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= (1 + mp) * real + 1e-9
    assert length_batches(lengths, 16, None) == [sorted(range(12), key=lambda i: lengths[i])]
    assert all(len({lengths[i] for i in b}) == 1 for b in length_batches(lengths, 16, 0.0))
    assert length_batches([], 4) == []
    with pytest.raises(RecallCircuitsError, match="batch_size"):
        length_batches(lengths, 0)


def test_bio_attribute_loss_and_scaling(bridges, tiny_dirs, tmp_path):
    b = bridges["tiny-llama"]
    res_all = cross_task_trace(b, DS, TraceConfig(n_people=2))
    res_attr = cross_task_trace(b, DS, TraceConfig(n_people=2, bio_loss="attribute"))
    assert res_all.n_examples == {"bio": 2, "qa": 12}
    assert not torch.equal(res_all.influence["bio"], res_attr.influence["bio"])
    assert torch.equal(res_all.influence["qa"], res_attr.influence["qa"])
    other = load_bridge(build_tiny("tiny-llama", tmp_path / "o", seed=3))
    mv = cross_task_trace(b, DS, TraceConfig(n_people=2, scale="movement"), base=other)
    move = (res_all.space.flatten(res_all.space.params(b)) - res_all.space.flatten(res_all.space.params(other))).abs()
    assert torch.allclose(mv.influence["qa"], res_all.influence["qa"] * move)
    with pytest.raises(RecallCircuitsError, match="pretrained"):
        cross_task_trace(b, DS, TraceConfig(scale="movement"))


def test_top_k_equals_torch_topk_and_ties():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(10_007, generator=g)
    for k in (1, 10, 517, 10_006, 10_007, 0):
        m = top_k_mask(x, k)
        ref = torch.zeros_like(m)
        if k:
            ref[torch.topk(x, k).indices] = True
        assert torch.equal(m, ref) and int(m.sum()) == k
    t = torch.tensor([1.0, 3.0, 2.0, 2.0, 2.0, 0.5])
    assert top_k_mask(t, 3).tolist() == [False, True, True, True, False, False]
    assert torch.equal(top_k_mask(t, 3), top_k_mask(t.clone(), 3))
    with pytest.raises(RecallCircuitsError, match="outside"):
        top_k_mask(x, 10_008)


def test_shared_curve_and_chance():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(20_000, generator=g)
    curve = shared_curve(a, a, [10, 100, 1000])
    assert curve.shared_fraction == [1.0, 1.0, 1.0] and curve.chance_fraction == [10 / 20_000, 100 / 20_000,
                                                                                  1000 / 20_000]
    b = torch.rand(20_000, generator=g)
    far = shared_curve(a, b, [2000, 10_000])
    for f, c in zip(far.shared_fraction, far.chance_fraction):  # independent rankings: near chance
        assert abs(f - c) < 0.05
    k = 500
    S = shared_mask(a, b, k)
    assert torch.equal(S, top_k_mask(a, k) & top_k_mask(b, k))


@pytest.mark.parametrize("arch", ARCHS)
def test_head_counts_equal_hand_count_on_raw_layout(arch, tiny_dirs, tmp_path):
    """A 0/1 mask written into the raw HF weights, booted as a bridge: counts per head == hand slices of HF."""
    hf = AutoModelForCausalLM.from_pretrained(tiny_dirs[arch])
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in hf.parameters():
            p.copy_((torch.rand(p.shape, generator=g) < 0.3).float())
    hf.save_pretrained(tmp_path / "m")
    import shutil

    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_dirs[arch] / f, tmp_path / "m" / f)
    b = load_bridge(tmp_path / "m")
    space = ParamSpace(b)
    mask = space.flatten(space.params(b)).bool()
    stats = head_stats(space, mask)
    for layer in range(b.cfg.n_layers):
        for head in range(b.cfg.n_heads):
            hand = hand_slices(hf, arch, layer, head)
            for comp in COMPONENTS:
                unit = kv_group(b, head) if comp in "KV" else head
                assert stats.per_component[comp][layer, unit] == hand[comp].sum()
    assert stats.attn_total == sum(float(p.detach().sum()) for n, p in hf.named_parameters()
                                      if n.endswith("weight") and any(s in n for s in
                                      ("c_attn", "attn.c_proj", "query_key_value", "attention.dense",
                                       "q_proj", "k_proj", "v_proj", "o_proj", "self_attn.dense")))
    assert abs(float(stats.per_head.sum()) - stats.attn_total) < 1e-3
    assert 0 < stats.top10pct_head_share <= 1 and 0 <= stats.head_gini < 1


@pytest.mark.parametrize("arch", ARCHS)
def test_restore_params_identities(arch, bridges, tiny_dirs, tmp_path):
    base = bridges[arch]
    ft = load_bridge(build_tiny(arch, tmp_path / "ft", seed=5))
    space = ParamSpace(ft, include=("attn", "mlp", "other"), biases=True)
    toks = torch.randint(4, 300, (2, 9), generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in ft.state_dict().items()}
    with torch.no_grad():
        ft_logits, base_logits = ft(toks), base(toks)
        diff = space.flatten(space.params(ft)) != space.flatten(space.params(base))
        with restore_params(ft, base, space, diff):
            assert torch.equal(ft(toks), base_logits)
        with restore_params(ft, base, space, torch.zeros(space.P, dtype=torch.bool)):
            assert torch.equal(ft(toks), ft_logits)
        part = random_like_mask(space, diff & (torch.rand(space.P) < 0.1), seed=1)
        with restore_params(ft, base, space, part):
            assert not torch.equal(ft(toks), ft_logits)
    after = ft.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(RecallCircuitsError, match="shape"):
        with restore_params(ft, base, space, torch.zeros(3, dtype=torch.bool)):
            pass


def test_random_like_mask_counts(bridges):
    space = ParamSpace(bridges["tiny-gpt2"])
    m = top_k_mask(torch.rand(space.P, generator=torch.Generator().manual_seed(3)), 1000)
    r = random_like_mask(space, m, seed=0)
    assert count_per_tensor(space, space.unflatten(m)) == count_per_tensor(space, space.unflatten(r))
    assert not torch.equal(r, m) and torch.equal(r, random_like_mask(space, m, seed=0))


def test_restore_gqa_group_touches_exactly_its_query_heads(bridges, tmp_path):
    base = bridges["tiny-llama"]
    ft = load_bridge(build_tiny("tiny-llama", tmp_path / "ft", seed=7))
    toks = torch.randint(4, 300, (2, 9), generator=torch.Generator().manual_seed(0))
    name = "blocks.1.attn.hook_z"
    with torch.no_grad():
        _, c0 = ft.run_with_cache(toks, names_filter=name)
        with restore_heads(ft, base, [(1, 0)], components=("K", "V")):
            _, c1 = ft.run_with_cache(toks, names_filter=name)
    changed = ((c0[name] - c1[name]).abs().amax(dim=(0, 1, 3)) > 0).nonzero().squeeze(1).tolist()
    assert changed == query_heads_of_group(ft, kv_group(ft, 0)) == [0, 1]


def test_trace_bad_input(bridges):
    b = bridges["tiny-gpt2"]
    with pytest.raises(RecallCircuitsError, match="empty"):
        trace_gradients(b, [], ParamSpace(b))
    with pytest.raises(RecallCircuitsError, match="unknown mode"):
        TraceConfig(mode="max")


def test_transpose_into():
    g = torch.Generator().manual_seed(0)
    for r, c in ((1536, 576), (192, 64), (48, 80), (7, 5), (64, 1)):   # 64-, 32- and 16-tiles, the plain copy
        src = torch.randn(r, c, generator=g)
        dst = torch.empty(c, r)
        assert transpose_into(dst, src) is dst and torch.equal(dst, src.T)


def test_trace_restores_the_garbage_collector(bridges):
    import gc

    b = bridges["tiny-gpt2"]
    space = ParamSpace(b)
    ex = task_examples(b.tokenizer, DS, "qa", select_people(DS, 1, "all"), "all")
    was = gc.isenabled()
    try:
        for state in (True, False):
            (gc.enable if state else gc.disable)()
            trace_gradients(b, ex, space, pad_id=b.tokenizer.pad_token_id)
            assert gc.isenabled() is state
    finally:
        (gc.enable if was else gc.disable)()


def test_trace_result_round_trips_and_its_head_table(bridges, tmp_path):
    from recall_circuits.attribution.trace import TraceResult

    b = bridges["tiny-llama"]
    res = cross_task_trace(b, DS, TraceConfig(n_people=2, batch_size=4))
    k = res.space.P // 50
    table = res.per_head(k)
    grid = count_per_query_head(res.space, res.space.unflatten(shared_mask(res.influence["bio"], res.influence["qa"],
                                                                          k).float()))
    assert list(table.columns) == ["layer", "head", "label", "shared", "rank"] and len(table) == grid.numel()
    for row in table.itertuples():
        assert row.shared == float(grid[row.layer, row.head]) and row.label == f"L{row.layer}H{row.head}"
    assert list(table["shared"]) == sorted(table["shared"], reverse=True)
    again = TraceResult.load(res.save(tmp_path / "t"), b)
    assert all(torch.equal(again.influence[t], res.influence[t]) for t in ("bio", "qa"))
    assert (again.config, again.n_examples, again.people) == (res.config, res.n_examples, res.people)
    assert again.per_head(k).equals(table)
    with pytest.raises(RecallCircuitsError, match="another parameter layout"):
        TraceResult.load(tmp_path / "t", bridges["tiny-gpt2"])


def test_chance_is_not_the_null_of_the_shared_set(bridges):
    """Measured, and the reason the trace run also traces the pretrained model: with no fine-tuning at all (random
    tiny models, so no QA training either) the BIO and QA top-k sets overlap far above k/P, because both losses run
    through the same weights on the same kind of text. A fine-tuned curve is read against the pretrained one."""
    for arch in ("tiny-gpt2", "tiny-llama"):
        res = cross_task_trace(bridges[arch], DS, TraceConfig(n_people=4))
        P = res.influence["bio"].numel()
        curve = shared_curve(res.influence["bio"], res.influence["qa"], [P // 1000, P // 100])
        assert all(f > 5 * c for f, c in zip(curve.shared_fraction, curve.chance_fraction)), (arch, curve)
        # and independent random influences do sit at chance: the comparison itself is sound
        g = torch.Generator().manual_seed(0)
        rand = shared_curve(torch.rand(P, generator=g), torch.rand(P, generator=g), [P // 100])
        assert abs(rand.shared_fraction[0] - rand.chance_fraction[0]) < 0.01
