import json

import pytest
import torch
from safetensors.torch import save_file

from analyses.gradient_trace import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_dirs, tiny_data):
    from recall_circuits.training import TrainConfig, train

    out = tmp_path_factory.mktemp("ft") / "mixed"
    return train(TrainConfig(model=str(tiny_dirs["tiny-llama"]), strategy="mixed", data=str(tiny_data), out=str(out),
                             epochs=6, lr=3e-3, batch_size=8, checkpoint_every=0), verbose=False)


def test_gradient_trace_run_directory(trained, tiny_dirs, tiny_data, tmp_path):
    out = tmp_path / "run"
    argv = ["--base", str(tiny_dirs["tiny-llama"]), "--finetuned", str(trained), "--data", str(tiny_data),
            "--out", str(out), "--n-people", "4", "--no-progress"]
    assert main(argv) == 0
    s = json.loads((out / "summary.json").read_text())
    for key in ("k", "shared_fraction", "chance_fraction", "top10pct_head_share", "curve", "ablation"):
        assert key in s
    assert s["shared_size"] == round(s["shared_fraction"] * s["k"]) and s["chance_fraction"] == s["k"] / s["P"]
    assert set(s["ablation"]) == {"none", "shared", "bio_top", "qa_top", "random0"}
    for cond in s["ablation"].values():
        assert {"qa_id_acc", "qa_ood_acc"} <= set(cond)
    assert s["ablation"]["shared"]["n_restored"] == s["ablation"]["random0"]["n_restored"] == s["shared_size"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["trace"]["n_people"] == 4 and cfg["checkpoints"]["finetuned"]["files"]
    for fig in ("shared_curve", "head_heatmap"):
        html = (out / "figures" / f"{fig}.html").read_text()
        assert "<script src=" not in html and "plotly" in html.lower()
    # the saved shared mask restores as a file condition and gives the same accuracies as the shared set
    out2 = tmp_path / "run2"
    assert main([*argv[:-3], "--out", str(out2), "--n-people", "4", "--no-progress",
                 "--restore-mask", str(out / "shared_mask.safetensors")]) == 0
    s2 = json.loads((out2 / "summary.json").read_text())
    assert s2["ablation"]["file:shared_mask.safetensors"] == s2["ablation"]["shared"]
    assert main(argv) == 2  # existing run directory


def test_gradient_trace_bad_input(trained, tiny_dirs, tiny_data, tmp_path, capsys):
    base = ["--finetuned", str(trained), "--data", str(tiny_data), "--no-progress"]
    bad_mask = tmp_path / "m.safetensors"
    save_file({"idx": torch.tensor([0, 1]), "P": torch.tensor([12])}, str(bad_mask))
    cases = [
        (["--base", str(tiny_dirs["tiny-neox"]), *base, "--out", str(tmp_path / "a")], "differ"),
        (["--base", str(tiny_dirs["tiny-llama"]), *base, "--out", str(tmp_path / "b"), "--k", "10000000"],
         "outside"),
        (["--base", str(tiny_dirs["tiny-llama"]), *base, "--out", str(tmp_path / "c"), "--n-people", "0"],
         "n_people"),
        (["--base", str(tiny_dirs["tiny-llama"]), *base, "--out", str(tmp_path / "d"), "--restore-mask",
          str(bad_mask)], "parameters"),
    ]
    for argv, msg in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error:") and msg in err[-1], err
        assert not (tmp_path / argv[argv.index("--out") + 1]).exists()  # nothing left behind
