import pytest
import torch

from recall_circuits.data.bios import load_dataset
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.interventions.grafting import GraftConfig, graft, graft_report, graft_space, grafted, transfer_mask
from recall_circuits.models.loading import load_bridge
from recall_circuits.models.params import ParamSpace
from recall_circuits.models.registry import build_tiny

from helpers import ARCHS


@pytest.mark.parametrize("arch", ARCHS)
def test_graft_all_ones_is_finetuned_and_zero_is_base(arch, bridges, tmp_path):
    base = bridges[arch]
    ft = load_bridge(build_tiny(arch, tmp_path / "ft", seed=11))
    space = graft_space(ft)
    pre = space.flatten(space.params(base)).float()
    diff = space.flatten(space.params(ft)).float() - pre
    toks = torch.randint(4, 300, (2, 9), generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in ft.state_dict().items()}
    with torch.no_grad():
        ft_logits, base_logits = ft(toks), base(toks)
        with grafted(ft, space, pre, diff, torch.ones(space.P, dtype=torch.bool)):
            assert (ft(toks) - ft_logits).abs().max() <= 1e-5
        with grafted(ft, space, pre, diff, torch.zeros(space.P, dtype=torch.bool)):
            assert torch.equal(ft(toks), base_logits)
    assert all(torch.equal(before[k], v) for k, v in ft.state_dict().items())
    with pytest.raises(RecallCircuitsError, match="shape"):
        with grafted(ft, space, pre, diff, torch.ones(3, dtype=torch.bool)):
            pass


def test_graft_learns_and_restores(tiny_dirs, tiny_data, tmp_path):
    from recall_circuits.training.loop import TrainConfig, train

    out = train(TrainConfig(model=str(tiny_dirs["tiny-neox"]), strategy="mixed", data=str(tiny_data),
                            out=str(tmp_path / "m"), epochs=8, lr=3e-3, batch_size=8, checkpoint_every=0),
                verbose=False)
    ft, base = load_bridge(out), load_bridge(tiny_dirs["tiny-neox"])
    ds = load_dataset(tiny_data)
    before = {k: v.clone() for k, v in ft.state_dict().items()}
    res = graft(ft, base, ds, GraftConfig(init_frac=0.05, steps=6, eval_every=3, batch_size=8))
    assert all(torch.equal(before[k], v) for k, v in ft.state_dict().items())
    assert res.alpha == int(res.mask.sum()) / res.space.P and 0 < res.alpha < 1
    assert res.val_acc == max(h["val_acc"] for h in res.history)
    shared_space = ParamSpace(ft)
    S = torch.zeros(shared_space.P, dtype=torch.bool)
    S[::97] = True
    rep = graft_report(ft, base, ds, res, S, shared_space)
    moved = transfer_mask(S, shared_space, res.space)
    assert int(moved.sum()) == int(S.sum())
    assert rep["shared_in_graft"] == int((moved & res.mask).sum())
    assert set(rep["grafted"]) == {"qa_id_acc", "qa_ood_acc"}
    with pytest.raises(RecallCircuitsError, match="initial mask"):
        graft(ft, base, ds, GraftConfig(steps=1), init_mask=torch.ones(5, dtype=torch.bool))


def test_grafting_script(tiny_dirs, tiny_data, tmp_path, capsys):
    import json

    from recall_circuits.training.loop import TrainConfig, train

    from analyses.gradient_trace import main as trace_main
    from analyses.grafting import main

    ft = train(TrainConfig(model=str(tiny_dirs["tiny-llama"]), strategy="mixed", data=str(tiny_data),
                           out=str(tmp_path / "m"), epochs=4, lr=3e-3, batch_size=8, checkpoint_every=0), verbose=False)
    common = ["--base", str(tiny_dirs["tiny-llama"]), "--finetuned", str(ft), "--data", str(tiny_data), "--no-progress"]
    assert trace_main([*common, "--out", str(tmp_path / "t"), "--people", "3", "--no-ablation"]) == 0
    assert main([*common, "--out", str(tmp_path / "g"), "--trace-dir", str(tmp_path / "t"), "--steps", "4",
                 "--eval-every", "2", "--init-frac", "0.02"]) == 0
    s = json.loads((tmp_path / "g" / "summary.json").read_text())
    for key in ("alpha", "shared_share_of_graft", "grafted", "grafted_without_shared", "acc_lost_without_shared"):
        assert key in s
    assert (tmp_path / "g" / "figures" / "graft_heatmap.html").is_file()
    assert main([*common, "--out", str(tmp_path / "g2"), "--trace-dir", str(tmp_path / "g")]) == 2
    assert "not a gradient-trace run directory" in capsys.readouterr().err
    # a gradient-trace directory of another model: its mask does not fit
    other = train(TrainConfig(model=str(tiny_dirs["tiny-neox"]), strategy="mixed", data=str(tiny_data),
                              out=str(tmp_path / "n"), epochs=1, batch_size=8, checkpoint_every=0), verbose=False)
    assert trace_main(["--base", str(tiny_dirs["tiny-neox"]), "--finetuned", str(other), "--data", str(tiny_data),
                       "--out", str(tmp_path / "tn"), "--people", "2", "--no-ablation", "--no-progress"]) == 0
    assert main([*common, "--out", str(tmp_path / "g3"), "--trace-dir", str(tmp_path / "tn")]) == 2
    assert "was computed on another base model" in capsys.readouterr().err   # before its mask is read
