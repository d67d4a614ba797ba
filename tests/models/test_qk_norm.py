"""restore_heads on a decoder with QK-norm (tiny Qwen3): the norms' weights are no head's own, so they stay
fine-tuned unless norms=True restores the layer's whole query and key norm."""

import pytest
import torch

from recall_circuits.errors import RecallCircuitsError
from recall_circuits.interventions.restore import qk_norm_views, restore_heads
from recall_circuits.models.loading import load_bridge
from recall_circuits.models.params import HeadSlices
from recall_circuits.models.registry import build_tiny


def test_qk_norms_are_restored_only_when_asked(bridges, tmp_path):
    base = bridges["tiny-qwen3"]
    ft = load_bridge(build_tiny("tiny-qwen3", tmp_path / "ft", seed=5))
    with torch.no_grad():                     # fine-tuned norms that differ from the pretrained ones
        for lay in range(ft.cfg.n_layers):
            for w in qk_norm_views(ft, lay).values():
                w.add_(0.25)
    norms = {lay: {k: v.clone() for k, v in qk_norm_views(ft, lay).items()} for lay in range(ft.cfg.n_layers)}
    assert set(norms[1]) == {"q_norm", "k_norm"} and qk_norm_views(bridges["tiny-llama"], 0) == {}
    toks = torch.randint(4, 300, (1, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = ft(toks)
        with restore_heads(ft, base, [(1, 0)]):
            assert all(torch.equal(qk_norm_views(ft, 1)[k], norms[1][k]) for k in norms[1])
            plain = ft(toks)
        with restore_heads(ft, base, [(1, 0)], norms=True):
            for k in norms[1]:
                assert torch.equal(qk_norm_views(ft, 1)[k], qk_norm_views(base, 1)[k])
                assert torch.equal(qk_norm_views(ft, 0)[k], norms[0][k])          # only the listed head's layer
            with_norms = ft(toks)
        assert not torch.equal(plain, with_norms)
        assert torch.equal(ft(toks), before)                                       # all of it undone
    with pytest.raises(RecallCircuitsError, match="norms=True"):
        with restore_heads(ft, HeadSlices(base), [(1, 0)], norms=True):
            pass
