"""The fast training path (length buckets, the loss read back every N steps, torch.compile, bfloat16 autocast):
the same loss as the plain loop where it claims to be, bit-identical after a resume on CPU."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from recall_circuits.data.bios import load_dataset
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.models.loading import load_tokenizer
from recall_circuits.training.loop import (
    BUCKET_WINDOW,
    TrainConfig,
    build_phases,
    epoch_batches,
    tokenize_dataset,
    train,
    train_identity,
)


def _weights(path):
    return load_file(str(Path(path) / "model.safetensors"))


def _metrics(out, drop=("elapsed_s",)):
    return [{k: v for k, v in json.loads(x).items() if k not in drop} for x in open(Path(out) / "metrics.jsonl")]


def _kw(tiny_dirs, tiny_data, arch="tiny-gpt2", **over):
    return dict(model=str(tiny_dirs[arch]), strategy="two-stage", data=str(tiny_data), epochs=2, lr=1e-3,
                batch_size=4, checkpoint_every=3, seed=1) | over


def test_logging_every_n_steps_changes_nothing_but_when(tiny_dirs, tiny_data, tmp_path):
    kw = _kw(tiny_dirs, tiny_data)
    a = train(TrainConfig(**kw, out=str(tmp_path / "a")), verbose=False)
    b = train(TrainConfig(**kw, out=str(tmp_path / "b"), log_every=7), verbose=False)
    wa, wb = _weights(a), _weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")          # every step's loss, to the last bit
    # not part of what is trained: the same identity, so a run resumes whatever its log_every
    assert train_identity(TrainConfig(**kw, out="x"), Path(kw["model"])) == train_identity(
        TrainConfig(**kw, out="y", log_every=50), Path(kw["model"]))
    with pytest.raises(RecallCircuitsError, match="log_every"):
        TrainConfig(**kw, out="x", log_every=0)


def test_length_buckets_cover_each_example_once_with_less_padding(tiny_dirs, tiny_data):
    tok = load_tokenizer(tiny_dirs["tiny-llama"])
    bio, qa = tokenize_dataset(tok, load_dataset(tiny_data))
    lengths = {"bio": [len(t["input_ids"]) for t in bio], "qa": [len(t["input_ids"]) for t in qa]}
    cfg = TrainConfig(model="m", strategy="mixed", data="d", out="o", mix_qa_repeat=BUCKET_WINDOW)
    phase = build_phases(cfg, len(bio), len(qa))[0]
    waste = {}
    for name, lens in (("plain", None), ("buckets", lengths)):
        pad = 0
        for epoch in range(3):
            batches = epoch_batches(phase, epoch, 4, seed=0, lengths=lens)
            assert batches == epoch_batches(phase, epoch, 4, seed=0, lengths=lens)     # deterministic
            assert sorted(ex for b in batches for ex in b) == sorted(phase.examples)    # each example once
            assert all(len({f for f, _ in b}) == 1 for b in batches)                    # one format a batch
            assert len(batches) == len(epoch_batches(phase, epoch, 4, seed=0))         # as many steps
            pad += sum(len(b) * max(lengths[f][i] for f, i in b) - sum(lengths[f][i] for f, i in b)
                       for b in batches)
        waste[name] = pad
    assert waste["buckets"] < waste["plain"] / 2, waste


@pytest.mark.parametrize("strategy,stop", [("two-stage", 5), ("mixed", 7)])
def test_a_resumed_fast_run_is_bit_identical(strategy, stop, tiny_dirs, tiny_data, tmp_path):
    kw = _kw(tiny_dirs, tiny_data, strategy=strategy, length_buckets=True, log_every=4)
    full = train(TrainConfig(**kw, out=str(tmp_path / "full")), verbose=False)
    train(TrainConfig(**kw, out=str(tmp_path / "cut")), verbose=False, stop_after_steps=stop)
    resumed = train(TrainConfig(**kw, out=str(tmp_path / "cut")), resume=True, verbose=False)
    a, b = _weights(full), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _metrics(tmp_path / "full") == _metrics(tmp_path / "cut")
    # buckets are another order of the same examples: another run, with its own identity
    plain = {k: v for k, v in kw.items() if k != "length_buckets"}
    assert train_identity(TrainConfig(**kw, out="x"), Path(kw["model"])) != train_identity(
        TrainConfig(**plain, out="x"), Path(kw["model"]))


def test_bf16_and_compile_give_the_plain_loss(tiny_dirs, tiny_data, tmp_path, monkeypatch):
    kw = _kw(tiny_dirs, tiny_data, arch="tiny-llama", epochs=1, checkpoint_every=0)
    train(TrainConfig(**kw, out=str(tmp_path / "plain")), verbose=False)
    train(TrainConfig(**kw, out=str(tmp_path / "bf16"), bf16=True, log_every=5), verbose=False)
    # torch.compile's own backend is minutes of C++ compilation on a CPU: the wiring is checked with the graph
    # captured and run as it is (backend "eager"), the same path up to code generation
    compile_ = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compile_(self, backend="eager", **kw))
    train(TrainConfig(**kw, out=str(tmp_path / "compiled"), compile=True), verbose=False)
    plain, bf16, comp = (_metrics(tmp_path / n) for n in ("plain", "bf16", "compiled"))
    assert [r["step"] for r in plain] == [r["step"] for r in bf16] == [r["step"] for r in comp]
    for p, b, c in zip(plain, bf16, comp):
        assert abs(p["loss"] - c["loss"]) <= 1e-4 * max(1.0, p["loss"])
        assert abs(p["loss"] - b["loss"]) <= 2e-2 * max(1.0, p["loss"])      # bfloat16: ~3 significant digits
    assert any(p["loss"] != b["loss"] for p, b in zip(plain, bf16))         # bf16 did run in bfloat16
    w = _weights(tmp_path / "compiled" / "model")
    assert w.keys() == _weights(tmp_path / "plain" / "model").keys()       # compiled in place: the same names


def test_two_recipes_at_once_on_the_fast_path_equal_one_after_the_other(tiny_dirs, tiny_data, tmp_path):
    """Both recipes trained at once, each in its own process (what a GPU run of the scaling study does on one
    device), give the weights each gives alone in this process, with the fast path's options on."""
    from recall_circuits.runs.stages.side_by_side import run_side_by_side

    kw = _kw(tiny_dirs, tiny_data, epochs=1, length_buckets=True, log_every=5, checkpoint_every=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # the children's thread count: the same reductions
    try:
        alone = {s: train(TrainConfig(**(kw | {"strategy": s}), out=str(tmp_path / "alone" / s)), verbose=False)
                 for s in ("mixed", "two-stage")}
    finally:
        torch.set_num_threads(threads)
    cfgs = {s: kw | {"strategy": s, "out": str(tmp_path / "both" / s)} for s in ("mixed", "two-stage")}
    run_side_by_side(cfgs, logs=tmp_path / "both", threads=1, verbose=False, poll_s=0.2)
    for s in cfgs:
        a, b = _weights(alone[s]), _weights(tmp_path / "both" / s / "model")
        assert all(torch.equal(a[k], b[k]) for k in a), s
