import pytest
import torch

from recall_circuits.attribution.trace import pad_batch, per_example_loss
from recall_circuits.compare.consistency import (
    _pair_examples,
    gradient_consistency,
    input_signature,
    linear_cka,
    representation_consistency,
)
from recall_circuits.data.bios import DataConfig, generate
from recall_circuits.models.loading import forget_graph
from recall_circuits.models.params import ParamSpace

DS = generate(DataConfig(n_people=4, seed=0))


def test_gradient_consistency_by_hand(bridges):
    """Every pair's cosine equals two separate forward and backward passes (the function makes one forward pass
    per biography for all its attributes), for two people."""
    model = bridges["tiny-neox"]
    res = gradient_consistency(model, DS, [0, 1])
    space = ParamSpace(model)
    params = space.params(model)
    refs = []
    for bio, qa, _ in _pair_examples(model.tokenizer, DS, [0, 1]):
        grads = []
        for ex in (bio, qa):
            for p in params.values():
                p.requires_grad_(True)
                p.grad = None
            ids, labels, _ = pad_batch([ex], 0)
            per_example_loss(model(ids), labels).sum().backward()
            grads.append(space.flatten({k: p.grad for k, p in params.items()}))
            for p in params.values():
                p.requires_grad_(False)
        refs.append(float(torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)))
    forget_graph(model)          # the session's bridge is shared with later tests
    assert res.per_pair == pytest.approx(refs, abs=1e-5) and len(set(refs)) > 1
    assert res.overall == pytest.approx(sum(refs) / len(refs), abs=1e-6)
    assert res.n_pairs == 12 and set(res.per_module) == {"L0.attn", "L0.mlp", "L1.attn", "L1.mlp"}
    assert all(not p.requires_grad for p in model.parameters())


def test_linear_cka_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 8, generator=g)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3 * x @ q) == pytest.approx(1.0)
    assert linear_cka(x, torch.randn(30, 8, generator=g)) < 0.6


def test_representation_consistency_by_hand(bridges):
    model = bridges["tiny-llama"]
    res = representation_consistency(model, DS, [0, 1])
    from recall_circuits.compare.attention import aligned_pairs

    cos = []
    for p in aligned_pairs(model.tokenizer, DS, [0, 1]):
        vecs = []
        for f in ("bio", "qa"):
            _, cache = model.run_with_cache(torch.tensor([p[f]["ids"]]))
            vecs.append(cache["blocks.1.hook_resid_post"][0, p[f]["pos"]])
        cos.append(float(torch.nn.functional.cosine_similarity(vecs[0], vecs[1], dim=0)))
    assert res.n_pairs == 12 and len(res.cosine) == 2
    assert res.cosine[1] == pytest.approx(sum(cos) / len(cos), abs=1e-5)
    assert 0 <= min(res.retrieval_acc) and max(res.retrieval_acc) <= 1


def test_input_signature(bridges):
    res = input_signature(bridges["tiny-gpt2"], DS, [0, 1])
    assert res.n_facts == 12 and all(0 <= s <= 1 for s in res.per_fact)
    assert all(not p.requires_grad for p in bridges["tiny-gpt2"].parameters())


def test_consistency_script_bad_input(tiny_data, tmp_path, capsys):
    from analyses.consistency import main

    assert main(["--models", "nopath", "--data", str(tiny_data), "--out", str(tmp_path / "c")]) == 2
    assert "NAME=PATH" in capsys.readouterr().err
    with pytest.raises(SystemExit) as ex:           # argparse: --models is required
        main(["--data", str(tiny_data), "--out", str(tmp_path / "c")])
    assert ex.value.code == 2 and "--models" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_cross_format_probe_transfers_only_when_the_formats_share_a_readout():
    from recall_circuits.compare.consistency import cross_format_probe

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(40) % 8
    centers = 4 * torch.randn(8, 16, generator=g)
    bio = centers[labels] + 0.3 * torch.randn(40, 16, generator=g)
    same = centers[labels] + 0.3 * torch.randn(40, 16, generator=g)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    rotated = same @ q
    good = cross_format_probe(bio, same, labels)
    bad = cross_format_probe(bio, rotated, labels)
    assert good["bio_to_qa"] == 1.0 and good["qa_to_bio"] == 1.0 and good["chance"] == pytest.approx(1 / 8)
    assert bad["bio_to_qa_train"] == 1.0 and bad["bio_to_qa"] < 0.5
    assert cross_format_probe(bio, rotated, labels) == bad  # deterministic


def test_representation_probe_and_gradient_consistency_along_snapshots(bridges, tiny_dirs, tiny_data, tmp_path):
    from recall_circuits.compare.consistency import gradient_consistency_along
    from recall_circuits.data.bios import load_dataset
    from recall_circuits.models.loading import load_bridge
    from recall_circuits.training.loop import TrainConfig, train

    res = representation_consistency(bridges["tiny-llama"], DS, [0, 1])
    assert len(res.probe["bio_to_qa"]) == 2 and all(0 <= a <= 1 for a in res.probe["qa_to_bio"])
    ds = load_dataset(tiny_data)
    out = tmp_path / "run"
    train(TrainConfig(model=str(tiny_dirs["tiny-gpt2"]), strategy="two-stage", data=str(tiny_data), out=str(out),
                      epochs=1, batch_size=8, checkpoint_every=0, snapshot_every=2), verbose=False)
    snaps = sorted(p.name for p in (out / "snapshots").iterdir())
    assert snaps and all(int(s.split("-")[1]) % 2 == 0 for s in snaps)
    people = ds.person_ids("ood")[:1]
    along = gradient_consistency_along(str(out), ds, people)
    assert along.step == sorted({int(s.split("-")[1]) for s in snaps} | {along.step[-1]})
    assert along.phase[0] == "bio" and along.phase[-1] == "qa"
    # each point is gradient_consistency of that checkpoint
    ref = gradient_consistency(load_bridge(along.path[0]), ds, people).overall
    assert along.gradient_cosine[0] == pytest.approx(ref, abs=1e-6)
    assert list(along.to_dataframe()["step"]) == along.step and along.to_points()[0]["path"] == along.path[0]
    # the last point is the final model, measured once: a cosine already known for it is taken, not measured again
    assert along.path[-1] == str(out / "model")
    assert along.gradient_cosine[-1] == pytest.approx(
        gradient_consistency(load_bridge(str(out / "model")), ds, people).overall, abs=1e-6)
    reused = gradient_consistency_along(str(out), ds, people, known={str(out / "model"): 7.0})
    assert reused.gradient_cosine == [*along.gradient_cosine[:-1], 7.0]
    with pytest.raises(Exception, match="snapshots"):
        gradient_consistency_along(str(tmp_path), ds, people)


@pytest.mark.parametrize("arch", ["tiny-gpt2", "tiny-llama"])
def test_gradient_passes_leave_no_graph_on_the_model(arch, tiny_dirs, tiny_data):
    """TransformerLens's attention bridges keep the last pattern; after a pass with gradients the library's
    functions drop it, so the bridge holds no autograd graph and can still be deep-copied."""
    import copy

    from recall_circuits.compare.consistency import gradient_consistency, input_signature
    from recall_circuits.data.bios import load_dataset
    from recall_circuits.interventions.patching import attribution_patch_heads, logit_diff_metric
    from recall_circuits.models.loading import load_bridge

    model = load_bridge(tiny_dirs[arch])
    ds = load_dataset(tiny_data)
    people = sorted(ds.person_ids("ood"))[:2]

    def graphs():
        return [(n, k) for n, m in model.named_modules() for k, v in vars(m).items()
                if isinstance(v, torch.Tensor) and v.grad_fn is not None]

    for run in (lambda: gradient_consistency(model, ds, people), lambda: input_signature(model, ds, people),
                lambda: attribution_patch_heads(model, torch.tensor([[1, 2, 3]]), torch.tensor([[1, 4, 3]]),
                                                logit_diff_metric(torch.tensor([5]), torch.tensor([6])))):
        run()
        assert graphs() == []
        copy.deepcopy(model)
