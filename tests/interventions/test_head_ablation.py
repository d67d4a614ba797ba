import copy
import json

import pytest
import torch

from recall_circuits.data.bios import load_dataset
from recall_circuits.interventions.head_ablation import QAScorer, head_curves, ranking, single_head_sweep
from recall_circuits.interventions.restore import restore_heads
from recall_circuits.models.loading import load_bridge
from recall_circuits.models.params import head_views, kv_group

from helpers import answer_logprob_reference


@pytest.fixture(scope="module")
def trained_llama(tmp_path_factory, tiny_dirs, tiny_data):
    from recall_circuits.training.loop import TrainConfig, train

    out = tmp_path_factory.mktemp("ft") / "mixed"
    path = train(TrainConfig(model=str(tiny_dirs["tiny-llama"]), strategy="mixed", data=str(tiny_data), out=str(out),
                             epochs=25, lr=3e-3, batch_size=8, checkpoint_every=0, mix_bio_repeat=0),
                 verbose=False)
    return load_bridge(path), load_bridge(tiny_dirs["tiny-llama"]), str(path)


@pytest.mark.parametrize("arch", ["tiny-gpt2", "tiny-neox", "tiny-llama"])
def test_restoring_unchanged_head_is_bit_identical(arch, bridges):
    base = bridges[arch]
    ft = copy.deepcopy(base)
    with torch.no_grad():
        for v in head_views(ft, 1, 2, biases=False).values():
            v.add_(0.3)
    toks = torch.randint(4, 300, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = ft(toks)
        for layer in range(ft.cfg.n_layers):
            for head in range(ft.cfg.n_heads):
                if layer == 1 and kv_group(ft, head) == kv_group(ft, 2):
                    continue
                with restore_heads(ft, base, [(layer, head)]):
                    assert torch.equal(ft(toks), ref)


def test_single_head_sweep_equals_naive_copy_loop(trained_llama, tiny_data):
    ft, base, _ = trained_llama
    ds = load_dataset(tiny_data)
    sweep = single_head_sweep(ft, base, ds, batch_size=7)
    assert sweep.baseline["qa_id_acc"] > 0
    for layer in range(ft.cfg.n_layers):
        for head in range(ft.cfg.n_heads):
            naive = copy.deepcopy(ft)  # the slow reference: a copy with the slices loaded by hand
            with torch.no_grad():
                src = head_views(base, layer, head)
                for name, v in head_views(naive, layer, head).items():
                    v.copy_(src[name])
            ref = QAScorer(naive, ds, batch_size=32)()
            assert set(ref) < set(sweep.grids)
            for k, v in ref.items():
                assert sweep.grids[k][layer, head] == pytest.approx(v, abs=1e-12)
    assert "KV group" in sweep.gqa_note


def test_curves_and_batch_size_invariance(trained_llama, tiny_data):
    ft, base, _ = trained_llama
    ds = load_dataset(tiny_data)
    scores = torch.arange(8.0).view(2, 4)
    order = ranking(scores)
    assert order[0] == (1, 3) and order[-1] == (0, 0)
    a = head_curves(ft, base, ds, {"r": order}, [0, 1, 8], batch_size=3)
    b = head_curves(ft, base, ds, {"r": order}, [0, 1, 8], batch_size=50)
    assert a == b
    pts = a.curves["r"]["points"]
    assert pts[0]["qa_id_acc"] == QAScorer(ft, ds)()["qa_id_acc"]


def test_head_ablation_script(trained_llama, tiny_dirs, tiny_data, tmp_path, capsys):
    from analyses.gradient_trace import main as trace_main
    from analyses.head_ablation import main

    ft_dir = trained_llama[2]
    common = ["--base", str(tiny_dirs["tiny-llama"]), "--finetuned", ft_dir, "--data", str(tiny_data), "--no-progress"]
    from analyses.activation_patching import main as patch_main

    assert trace_main([*common, "--out", str(tmp_path / "t"), "--people", "3", "--no-ablation"]) == 0
    assert patch_main(["--model", ft_dir, "--data", str(tiny_data), "--out", str(tmp_path / "p"), "--pairs", "1",
                       "--split", "all"]) == 0
    assert main([*common, "--out", str(tmp_path / "h"), "--trace-dir", str(tmp_path / "t"), "--grid", "0,1,2",
                 "--n-random", "2", "--patching-dir", str(tmp_path / "p")]) == 0
    s = json.loads((tmp_path / "h" / "summary.json").read_text())
    assert set(s["curves"]) == {"shared_size", "attribution", "random0", "random1"} and "gqa_note" in s
    assert len(s["single_head_top_ood_drop"]) == 8
    assert (tmp_path / "h" / "figures" / "head_curves.html").is_file()
    # a gradient-trace directory from another model
    from recall_circuits.artefacts import save_tensors
    (tmp_path / "other").mkdir()
    save_tensors(tmp_path / "other", {"shared_per_head": torch.zeros(3, 4)})
    for name in ("config.json", "summary.json"):        # complete, with no checkpoint recorded: the shapes decide
        (tmp_path / "other" / name).write_text("{}")
    assert main([*common, "--out", str(tmp_path / "h2"), "--trace-dir", str(tmp_path / "other")]) == 2
    assert "made for a model" in capsys.readouterr().err
    # invalid values are refused before any model loads and before the run directory is made
    assert main([*common, "--out", str(tmp_path / "h3"), "--grid", "0,99"]) == 2
    assert "--grid values must be in [0, 8]" in capsys.readouterr().err and not (tmp_path / "h3").exists()
    with pytest.raises(SystemExit) as ex:          # argparse refuses it
        main([*common, "--out", str(tmp_path / "h4"), "--components", "Q,X"])
    assert ex.value.code == 2 and "Q,K,V,O" in capsys.readouterr().err and not (tmp_path / "h4").exists()


@pytest.mark.parametrize("arch", ["tiny-gpt2", "tiny-neox", "tiny-llama"])
def test_single_head_sweep_logprob_equals_naive_loop(arch, bridges, tiny_data):
    """Random-weight models score 0 accuracy, so compare the continuous answer log-probability per head."""
    from recall_circuits.models.params import HeadSlices

    base = bridges[arch]
    ft = copy.deepcopy(base)
    with torch.no_grad():
        for p in ft.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    ds = load_dataset(tiny_data)
    before = {k: v.clone() for k, v in ft.state_dict().items()}
    sweep = single_head_sweep(ft, HeadSlices(base), ds, batch_size=6)
    assert all(torch.equal(before[k], v) for k, v in ft.state_dict().items())
    assert sweep.baseline["qa_ood_answer_logprob"] == pytest.approx(answer_logprob_reference(ft, ds, "ood"),
                                                                    abs=1e-4)
    grid = sweep.grids["qa_ood_answer_logprob"]
    for layer, head in [(0, 0), (1, 3), (ft.cfg.n_layers - 1, 1)]:
        naive = copy.deepcopy(ft)
        with torch.no_grad():
            src = head_views(base, layer, head)
            for name, v in head_views(naive, layer, head).items():
                v.copy_(src[name])
        assert float(grid[layer, head]) == pytest.approx(answer_logprob_reference(naive, ds, "ood"), abs=1e-4)
    # the slices and the whole pretrained model give the same sweep
    again = single_head_sweep(ft, base, ds, batch_size=6)
    assert all(torch.equal(again.grids[k], v) for k, v in sweep.grids.items())
