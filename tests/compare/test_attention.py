import json
import re

import pytest
import torch

from recall_circuits.compare.attention import aligned_pairs, js_divergence, role_masses
from recall_circuits.data.bios import DataConfig, generate
from recall_circuits.data.pools import load_pools
from recall_circuits.errors import RecallCircuitsError

from helpers import ARCHS

DS = generate(DataConfig(n_people=6, seed=0))


@pytest.mark.parametrize("arch", ARCHS)
def test_role_masses_sum_to_one_and_batch_invariant(arch, bridges):
    b = bridges[arch]
    r = role_masses(b, DS, [0, 1, 2], batch_size=4)
    r1 = role_masses(b, DS, [0, 1, 2], batch_size=1)
    assert r.per_example.shape == (2, 18, b.cfg.n_layers, b.cfg.n_heads, 4)
    assert torch.allclose(r.per_example.sum(-1), torch.ones(()), atol=1e-5)
    assert (r.per_example - r1.per_example).abs().max() <= 1e-5
    assert ((r.similarity >= -1e-6) & (r.similarity <= 1 + 1e-6)).all()


def test_role_mass_by_hand(bridges):
    """The subject mass of one head equals the pattern summed over the subject tokens, read from run_with_cache."""
    b = bridges["tiny-llama"]
    pair = aligned_pairs(b.tokenizer, DS, [1], ["major"])[0]
    r = role_masses(b, DS, [1], ["major"])
    for i, fmt in enumerate(("bio", "qa")):
        ids = torch.tensor([pair[fmt]["ids"]])
        _, cache = b.run_with_cache(ids)
        pat = cache["blocks.1.attn.hook_pattern"][0, 2, pair[fmt]["pos"]]
        assert 0 not in pair[fmt]["subject"]  # position 0 is BOS here
        assert r.mean[i, 1, 2, 0] == pytest.approx(float(pat[pair[fmt]["subject"]].sum()), abs=1e-6)
        assert r.mean[i, 1, 2, 2] == pytest.approx(float(pat[0]), abs=1e-6)
        assert r.mean[i, 1, 2, 1] == pytest.approx(float(pat[pair[fmt]["relation"]].sum()), abs=1e-6)
        text = re.sub(r"\s+", "", b.tokenizer.decode([pair[fmt]["ids"][j] for j in pair[fmt]["relation"]]))
        templates = load_pools().bio_templates["major"] if fmt == "bio" else [load_pools().qa_templates["major"]]
        phrases = {re.sub(r"\s+", "", "".join(re.findall(r"\[(.*?)\]", t))) for t in templates}
        assert text in phrases

def test_js_divergence():
    p = torch.tensor([0.5, 0.5, 0.0, 0.0])
    assert js_divergence(p, p).item() == pytest.approx(0, abs=1e-9)
    assert js_divergence(p, torch.tensor([0.0, 0.0, 0.5, 0.5])).item() == pytest.approx(1, abs=1e-6)


def test_no_alignable_role(bridges):
    ds = generate(DataConfig(n_people=2, seed=0))
    for e in ds.bio_examples:
        e["facts"][2]["relation"] = []
    with pytest.raises(RecallCircuitsError, match="no alignable relation"):
        aligned_pairs(bridges["tiny-gpt2"].tokenizer, ds, [0])


def test_attention_script(tiny_dirs, tiny_data, tmp_path):
    from analyses.attention_compare import main

    out = tmp_path / "a"
    assert main(["--models", f"a={tiny_dirs['tiny-neox']}", "b=tiny-neox", "--data", str(tiny_data),
                 "--out", str(out), "--people", "2", "--view-heads", "2"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert set(s["models"]) == {"a", "b"} and s["models"]["a"]["mean_similarity"] == s["models"]["b"]["mean_similarity"]
    page = (out / "figures" / "circuitsvis_a.html").read_text()
    assert "BIO" in page and "QA" in page and not re.search(r"unpkg|jsdelivr|<script[^>]+src=", page)
    assert main(["--models", "bad", "--data", str(tiny_data), "--out", str(tmp_path / "b")]) == 2
