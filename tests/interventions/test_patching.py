import pytest
import torch
import transformer_lens.patching as tlp

from recall_circuits.errors import RecallCircuitsError
from recall_circuits.interventions.patching import (
    answer_prob_metric,
    attribution_patch_heads,
    cross_format_patch,
    logit_diff_metric,
    patch_heads_by_pos,
    patch_resid_by_pos,
)

from helpers import ARCHS


def _prompts(seed=0, B=2, T=7):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(4, 300, (B, T), generator=g)
    corrupted = clean.clone()
    corrupted[:, 2:4] = torch.randint(4, 300, (B, 2), generator=g)
    return clean, corrupted


@pytest.mark.parametrize("arch", ARCHS)
def test_heads_by_pos_equals_transformer_lens(arch, bridges):
    model = bridges[arch]
    clean, corr = _prompts()
    metric = logit_diff_metric(torch.tensor([5, 9]), torch.tensor([7, 11]))
    ours = patch_heads_by_pos(model, clean, corr, metric, cells_per_batch=5)
    with torch.no_grad():
        _, cache = model.run_with_cache(clean)
        ref = tlp.get_act_patch_attn_head_out_by_pos(model, corr, cache, lambda lg: metric(lg[:, -1]).mean())
    assert ours.shape == ref.shape == (model.cfg.n_layers, clean.shape[1], model.cfg.n_heads)
    assert (ours - ref.cpu()).abs().max() <= 1e-4
    assert torch.allclose(patch_heads_by_pos(model, clean, corr, metric, cells_per_batch=64), ours, atol=1e-5)
    # fewer cells per batch than heads (a position split over batches), and every position run (no key/value prefix)
    assert model.cfg.n_heads > 3
    assert torch.allclose(patch_heads_by_pos(model, clean, corr, metric, cells_per_batch=3), ours, atol=1e-5)
    full = patch_heads_by_pos(model, clean, corr, metric, cells_per_batch=5, skip_positions=False,
                              skip_identical=False)
    assert (full - ref.cpu()).abs().max() <= 1e-4
    assert torch.allclose(full, ours, atol=1e-5)
    # the prompts agree on positions 0-1: those cells are the corrupted run's metric, as TransformerLens finds
    with torch.no_grad():
        corrupted_value = metric(model(corr)[:, -1]).mean()
    assert torch.allclose(ref[:, :2].cpu(), corrupted_value.expand(model.cfg.n_layers, 2, model.cfg.n_heads), atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_resid_and_layer_outputs_equal_transformer_lens(arch, bridges):
    model = bridges[arch]
    clean, corr = _prompts(1)
    metric = answer_prob_metric(torch.tensor([5, 9]))
    with torch.no_grad():
        _, cache = model.run_with_cache(clean)
    f = lambda lg: metric(lg[:, -1]).mean()  # noqa: E731
    for comp, ref_fn in (("resid_pre", tlp.get_act_patch_resid_pre), ("attn_out", tlp.get_act_patch_attn_out),
                         ("mlp_out", tlp.get_act_patch_mlp_out)):
        ours = patch_resid_by_pos(model, clean, corr, metric, comp, cells_per_batch=3)
        with torch.no_grad():
            ref = ref_fn(model, corr, cache, f)
        assert (ours - ref.cpu()).abs().max() <= 1e-5, comp
        full = patch_resid_by_pos(model, clean, corr, metric, comp, cells_per_batch=64, skip_positions=False,
                                  skip_identical=False)
        assert torch.allclose(full, ours, atol=1e-5), comp


def test_clean_into_clean_gives_clean_metric(bridges):
    model = bridges["tiny-llama"]
    clean, _ = _prompts(2)
    metric = logit_diff_metric(torch.tensor([5, 9]), torch.tensor([7, 11]))
    with torch.no_grad():
        clean_value = metric(model(clean)[:, -1]).mean()
    grid = patch_heads_by_pos(model, clean, clean, metric)
    assert torch.allclose(grid, clean_value.expand_as(grid), atol=1e-5)


def test_cross_format_patch(bridges):
    model = bridges["tiny-neox"]
    src, _ = _prompts(3, B=1, T=9)
    tgt, _ = _prompts(4, B=1, T=6)
    metric = answer_prob_metric(torch.tensor([5]))
    out = cross_format_patch(model, src, tgt, {"subject": (3, 2), "predict": (8, 5)}, metric)
    # by hand for one cell: layer 1, subject
    name = "blocks.1.hook_resid_pre"
    with torch.no_grad():
        _, sc = model.run_with_cache(src)

        def hook(act, hook):
            act[:, 2] = sc[name][:, 3]
            return act

        ref = metric(model.run_with_hooks(tgt, fwd_hooks=[(name, hook)])[:, -1]).mean()
    assert out.shape == (2, 2) and abs(out[1, 0] - ref) <= 1e-5
    # source == target, positions paired with themselves: nothing changes
    same = cross_format_patch(model, tgt, tgt, {"a": (1, 1)}, metric)
    with torch.no_grad():
        base = metric(model(tgt)[:, -1]).mean()
    assert torch.allclose(same, base.expand_as(same), atol=1e-5)
    with pytest.raises(RecallCircuitsError, match="outside"):
        cross_format_patch(model, src, tgt, {"a": (20, 1)}, metric)
    with pytest.raises(RecallCircuitsError, match="no role-aligned"):
        cross_format_patch(model, src, tgt, {}, metric)


def test_attribution_patching_is_the_linear_estimate(bridges):
    model = bridges["tiny-gpt2"]
    clean, corr = _prompts(5)
    metric = logit_diff_metric(torch.tensor([5, 9]), torch.tensor([7, 11]))
    attr = attribution_patch_heads(model, clean, corr, metric)
    exact = patch_heads_by_pos(model, clean, corr, metric)
    with torch.no_grad():
        base = metric(model(corr)[:, -1]).mean()
    assert attr.shape == exact.shape
    # where clean and corrupted activations are equal (positions before the corruption), both effects are zero
    assert attr[:, :2].abs().max() <= 1e-6 and (exact[:, :2] - base).abs().max() <= 1e-5
    # the estimate tracks the exact effect on this small perturbation
    eff = (exact - base).flatten()
    assert torch.corrcoef(torch.stack([attr.flatten(), eff]))[0, 1] > 0.5


def test_shapes_must_match(bridges):
    with pytest.raises(RecallCircuitsError, match="same"):
        patch_heads_by_pos(bridges["tiny-gpt2"], torch.zeros(1, 4, dtype=torch.long),
                           torch.zeros(1, 5, dtype=torch.long), answer_prob_metric(torch.tensor([1])))


def test_activation_patching_script(tiny_dirs, tiny_data, tmp_path):
    import json

    from recall_circuits.interventions.patching import grid_to_dataframe

    from analyses.activation_patching import main

    assert main(["--model", str(tiny_dirs["tiny-llama"]), "--data", str(tiny_data), "--out", str(tmp_path / "p"),
                 "--pairs", "2", "--split", "all"]) == 0
    s = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert len(s["pairs"]) == 2 and s["roles"] == ["subject", "relation", "predict"]
    assert len(s["cross_format_by_layer_role"]) == 2
    # pairs of different prompt lengths (different attributes) in one run
    assert main(["--model", str(tiny_dirs["tiny-llama"]), "--data", str(tiny_data), "--out", str(tmp_path / "q"),
                 "--pairs", "12", "--split", "all"]) == 0
    from safetensors.torch import load_file

    t = load_file(str(tmp_path / "q" / "result.safetensors"))
    lengths = {t[k].shape[1] for k in t if k.startswith("heads_by_pos.")}
    assert len(lengths) > 1
    q = json.loads((tmp_path / "q" / "summary.json").read_text())
    assert -1 <= q["attribution_vs_exact_corr"] <= 1
    df = grid_to_dataframe(torch.arange(24.0).view(2, 3, 4), ("layer", "pos", "head"))
    assert list(df.columns) == ["layer", "pos", "head", "value"] and df.iloc[5].tolist() == [0, 1, 1, 5.0]


@pytest.mark.parametrize("per_pos,cpb", [(4, 3), (4, 4), (4, 9), (1, 5), (9, 36)])
def test_position_chunks_cover_every_cell_once_in_whole_positions(per_pos, cpb):
    from recall_circuits.interventions.patching import _position_chunks

    cells = [(p, i) for p in (0, 2, 3, 5, 6, 7, 9) for i in range(per_pos)]
    chunks = _position_chunks(list(reversed(cells)), cpb)
    flat = [c for ch in chunks for c in ch]
    assert sorted(flat) == sorted(cells) and len(flat) == len(cells)
    assert all(0 < len(ch) <= cpb for ch in chunks)
    for ch in chunks:
        positions = {p for p, _ in ch}
        if per_pos <= cpb:   # whole positions: every cell of a position is in the same batch
            assert all(sum(1 for c in ch if c[0] == p) == per_pos for p in positions)
        else:
            assert len(positions) == 1 or all(sum(1 for c in ch if c[0] == p) < per_pos for p in positions)


def test_cells_per_batch_below_one_is_an_error(bridges):
    clean, corr = _prompts()
    metric = logit_diff_metric(torch.tensor([5, 9]), torch.tensor([7, 11]))
    with pytest.raises(RecallCircuitsError, match="cells_per_batch"):
        patch_heads_by_pos(bridges["tiny-llama"], clean, corr, metric, cells_per_batch=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_key_value_cache_probe(arch, bridges, monkeypatch):
    """The probe finds the keyword form under which each bridge fills and reads a cache (so patching keeps its
    position skipping on the locked versions), and finds none when the cache is ignored; patching is then exact
    through every position."""
    from recall_circuits.interventions import patching
    from recall_circuits.models import loading

    model = bridges[arch]
    names = loading.kv_cache_kwargs(model)
    assert names is not None and "past_key_values" in names
    clean, corr = _prompts()
    metric = logit_diff_metric(torch.tensor([5, 9]), torch.tensor([7, 11]))
    fast = patch_heads_by_pos(model, clean, corr, metric, cells_per_batch=5)
    monkeypatch.setattr(loading, "_KV_FORMS", (("no_such_cache_kwarg",),))
    assert loading.kv_cache_kwargs(model) is None
    monkeypatch.setattr(patching, "kv_cache_kwargs", loading.kv_cache_kwargs)
    assert torch.allclose(patch_heads_by_pos(model, clean, corr, metric, cells_per_batch=5), fast, atol=1e-5)
