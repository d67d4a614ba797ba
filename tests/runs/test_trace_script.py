import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from analyses.gradient_trace import main
from helpers import ROOT




@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_dirs, tiny_data):
    from recall_circuits.training.loop import TrainConfig, train

    out = tmp_path_factory.mktemp("ft") / "mixed"
    return train(TrainConfig(model=str(tiny_dirs["tiny-llama"]), strategy="mixed", data=str(tiny_data), out=str(out),
                             epochs=6, lr=3e-3, batch_size=8, checkpoint_every=0), verbose=False)


def test_gradient_trace_run_directory(trained, tiny_dirs, tiny_data, tmp_path):
    out = tmp_path / "run"
    argv = ["--base", str(tiny_dirs["tiny-llama"]), "--finetuned", str(trained), "--data", str(tiny_data),
            "--out", str(out), "--people", "4", "--no-progress"]
    assert main(argv) == 0
    s = json.loads((out / "summary.json").read_text())
    for key in ("k", "shared_fraction", "chance_fraction", "top10pct_head_share", "curve", "ablation"):
        assert key in s
    assert s["shared_size"] == round(s["shared_fraction"] * s["k"]) and s["chance_fraction"] == s["k"] / s["P"]
    assert set(s["ablation"]) == {"none", "shared", "bio_top", "qa_top", "random0"}
    for cond in s["ablation"].values():
        assert {"qa_id_acc", "qa_ood_acc"} <= set(cond)
    assert s["ablation"]["shared"]["n_restored"] == s["ablation"]["random0"]["n_restored"] == s["shared_size"]
    # the pretrained baseline is the same trace of the base model
    import recall_circuits as rc
    from recall_circuits.attribution.shared import shared_curve

    pre = rc.cross_task_trace(rc.load_bridge(str(tiny_dirs["tiny-llama"])), rc.load_dataset(tiny_data),
                              rc.TraceConfig(n_people=4))
    assert s["curve_pretrained"] == shared_curve(pre.influence["bio"], pre.influence["qa"], s["curve"]["k"]).to_dict()
    assert s["shared_fraction_pretrained"] == s["curve_pretrained"]["shared_fraction"][s["curve"]["k"].index(s["k"])]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["trace"]["n_people"] == 4 and cfg["checkpoints"]["finetuned"]["files"]
    for fig in ("shared_curve", "head_heatmap"):
        html = (out / "figures" / f"{fig}.html").read_text()
        assert "<script src=" not in html and "plotly" in html.lower()
    # the saved shared mask restores as a file condition and gives the same accuracies as the shared set
    out2 = tmp_path / "run2"
    assert main([*argv[:-3], "--out", str(out2), "--people", "4", "--no-progress",
                 "--restore-mask", str(out / "shared_mask.safetensors")]) == 0
    s2 = json.loads((out2 / "summary.json").read_text())
    assert s2["ablation"]["file:shared_mask.safetensors"] == s2["ablation"]["shared"]
    out3 = tmp_path / "run3"
    assert main([*argv[:-3], "--out", str(out3), "--people", "4", "--no-progress", "--no-ablation",
                 "--no-baseline"]) == 0
    assert "curve_pretrained" not in json.loads((out3 / "summary.json").read_text())
    stamp = (out / "summary.json").stat().st_mtime_ns
    assert main(argv) == 0  # the same run, complete: reported and reused, not computed again
    assert (out / "summary.json").stat().st_mtime_ns == stamp
    assert main([*argv, "--k", "7"]) == 2  # another run in the same directory: refused (--overwrite recomputes)


def test_gradient_trace_bad_input(trained, tiny_dirs, tiny_data, tmp_path, capsys):
    base = ["--finetuned", str(trained), "--data", str(tiny_data), "--no-progress"]
    bad_mask = tmp_path / "m.safetensors"
    save_file({"idx": torch.tensor([0, 1]), "P": torch.tensor([12])}, str(bad_mask))
    cases = [
        (["--base", str(tiny_dirs["tiny-neox"]), *base, "--out", str(tmp_path / "a")], "differ"),
        (["--base", str(tiny_dirs["tiny-llama"]), *base, "--out", str(tmp_path / "b"), "--k", "10000000"],
         "outside"),
        (["--base", str(tiny_dirs["tiny-llama"]), *base, "--out", str(tmp_path / "c"), "--people", "0"],
         "n_people"),
        (["--base", str(tiny_dirs["tiny-llama"]), *base, "--out", str(tmp_path / "d"), "--restore-mask",
          str(bad_mask)], "parameters"),
    ]
    for argv, msg in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error:") and msg in err[-1], err
        assert not (tmp_path / argv[argv.index("--out") + 1]).exists()  # nothing left behind


@pytest.mark.slow
@pytest.mark.parametrize("mode, batch", [("sum_abs", "2"), ("abs_of_sum", "8")])
def test_gradient_trace_two_processes_equal_one(trained, tiny_dirs, tiny_data, tmp_path, mode, batch):
    """torchrun with two processes (gloo): each traces every other batch, the sums are all-reduced; the influence
    equals one process's. Batch 8 leaves the second process without a BIO batch (6 biographies)."""
    common = ["--base", str(tiny_dirs["tiny-llama"]), "--finetuned", str(trained), "--data", str(tiny_data),
              "--people", "6", "--batch-size", batch, "--mode", mode, "--no-ablation", "--save-influence",
              "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29519",
           str(ROOT / "analyses" / "gradient_trace.py"), *common, "--out", str(tmp_path / "two")]
    two = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, "\n".join(x for x in two.stderr.splitlines() if not x.startswith("W"))[-6000:]
    a, b = (load_file(str(tmp_path / d / "result.safetensors")) for d in ("one", "two"))
    for task in ("bio", "qa"):
        x, y = a[f"influence_{task}"], b[f"influence_{task}"]
        assert x.abs().max() > 0 and ((x - y).abs().max() / x.abs().max()).item() <= 1e-5
    s1, s2 = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two"))
    assert (s1["trace_processes"], s2["trace_processes"]) == (1, 2) and s1["n_examples"] == s2["n_examples"]
    # the run directory holds this run: every process reuses it; another run there: every process stops with the
    # error, none waits for another
    stamp = (tmp_path / "two" / "summary.json").stat().st_mtime_ns
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and (tmp_path / "two" / "summary.json").stat().st_mtime_ns == stamp
    other = subprocess.run([*cmd, "--k", "7"], env=env, capture_output=True, text=True, timeout=120)
    assert other.returncode != 0 and "was computed from a different config.k" in other.stderr
