"""One Shared Size per head (GQA: a group's K/V split among its query heads, the convention of head_stats), one
default k, ties reported as ties."""

import pytest
import torch

from recall_circuits.attribution.shared import head_stats
from recall_circuits.attribution.trace import DEFAULT_K_FRAC, TraceConfig, TraceResult, cross_task_trace
from recall_circuits.data.bios import load_dataset
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.models.params import ParamSpace
from recall_circuits.runs.stages.trace import TraceStageConfig


def test_one_shared_size_per_head(bridges, tiny_data):
    b = bridges["tiny-llama"]                         # GQA: 4 query heads, 2 KV groups
    res = cross_task_trace(b, load_dataset(tiny_data), TraceConfig(n_people=2, batch_size=4))
    k = res.default_k
    assert k == max(1, round(DEFAULT_K_FRAC * res.space.P)) and TraceStageConfig.k_frac == DEFAULT_K_FRAC
    from analyses.gradient_trace import build_parser

    assert build_parser().get_default("k_frac") == DEFAULT_K_FRAC        # the script's k is the same
    table = res.per_head()                            # the default k
    stats = head_stats(res.space, res.shared(k))
    for row in table.itertuples():
        assert row.shared == pytest.approx(float(stats.per_head[row.layer, row.head]))
    assert table["shared"].sum() == pytest.approx(stats.attn_total)          # sums to S_k's attention entries
    full = res.per_head(gqa="full")
    assert "touched" in full and "shared" not in full
    assert full["touched"].sum() > table["shared"].sum()                        # K/V counted once per query head
    assert res.to_dataframe().equals(table.assign(k=k))
    with pytest.raises(RecallCircuitsError, match="outside"):
        res.per_head(res.space.P + 1)


def test_ties_are_reported_as_ties(bridges):
    b = bridges["tiny-llama"]
    space = ParamSpace(b)
    infl = torch.zeros(space.P)
    for layer, head in ((1, 0), (1, 2)):              # five shared entries in each of two heads: a tie
        infl[space.head_flat_indices(layer, head, "Q")[:5]] = 1.0
    res = TraceResult({"bio": infl, "qa": infl.clone()}, space, TraceConfig())
    table = res.per_head(10)
    assert list(table["shared"][:3]) == [5.0, 5.0, 0.0] and list(table["rank"][:3]) == [1, 1, 3]
    assert res.top_heads(10, n=1) == [(1, 0), (1, 2)]                            # both, not the first by index
    assert res.top_heads(10, n=3) == [(1, 0), (1, 2)]                            # a head with none is no top head
    with pytest.raises(RecallCircuitsError, match="n must be"):
        res.top_heads(10, n=0)
