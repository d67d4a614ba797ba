"""Fine-tuning side by side in child processes: the same models as in this process, resume after an
interruption, a failed run named with its log."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from recall_circuits.errors import RecallCircuitsError
from recall_circuits.runs.stages.finetune import run_finetune
from recall_circuits.runs.stages.side_by_side import run_side_by_side


def _cfgs(tiny_dirs, tiny_data, root: Path) -> dict[str, dict]:
    kw = dict(model=str(tiny_dirs["tiny-gpt2"]), data=str(tiny_data), epochs=1, lr=1e-3, batch_size=4,
              checkpoint_every=3, seed=1)
    return {s: {**kw, "strategy": s, "out": str(root / s)} for s in ("mixed", "two-stage")}


def _weights(out) -> dict[str, torch.Tensor]:
    return load_file(str(Path(out) / "model" / "model.safetensors"))


def test_side_by_side_trains_what_this_process_would_and_resumes(tiny_dirs, tiny_data, tmp_path):
    ref = _cfgs(tiny_dirs, tiny_data, tmp_path / "here")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # the children's thread count: the same reductions, the same weights
    try:
        expected = {s: run_finetune(c, verbose=False) for s, c in ref.items()}
    finally:
        torch.set_num_threads(threads)
    cfgs = _cfgs(tiny_dirs, tiny_data, tmp_path / "apart")
    cut = run_side_by_side(cfgs, logs=tmp_path / "apart", verbose=False, stop_after_steps=5, poll_s=0.2)
    assert cut == {"mixed": None, "two-stage": None}                       # interrupted: no results yet
    assert all((tmp_path / "apart" / s / "checkpoint").is_dir() for s in cfgs)
    assert not any((tmp_path / "apart" / s / "model").exists() for s in cfgs)
    got = run_side_by_side(cfgs, logs=tmp_path / "apart", verbose=False, poll_s=0.2)   # the same call resumes
    for s in cfgs:
        a, b = _weights(ref[s]["out"]), _weights(cfgs[s]["out"])
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), s
        assert got[s]["qa_id_acc"] == expected[s]["qa_id_acc"] and got[s]["steps"] == expected[s]["steps"]
        assert got[s]["torch_threads"] == 1


def test_a_failed_run_is_named_with_its_log_and_the_other_finishes(tiny_dirs, tiny_data, tmp_path):
    cfgs = _cfgs(tiny_dirs, tiny_data, tmp_path)
    cfgs["two-stage"]["data"] = str(tmp_path / "no-such-data")
    with pytest.raises(RecallCircuitsError, match=r"fine-tuning two-stage failed: see .*two-stage\.log"):
        run_side_by_side(cfgs, logs=tmp_path, verbose=False, stop_after_steps=2, poll_s=0.2)
    assert (tmp_path / "mixed" / "checkpoint").is_dir()     # the other run went on to where it was told to stop
    assert "no-such-data" in (tmp_path / "two-stage.log").read_text()
    with pytest.raises(RecallCircuitsError, match="threads must be at least 1"):
        run_side_by_side(cfgs, logs=tmp_path, threads=0)
