import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from recall_circuits.data.bios import load_dataset, tokenize_qa
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.models.loading import load_hf
from recall_circuits.training.evaluation import evaluate, evaluate_qa, generate_answers
from recall_circuits.training.loop import TrainConfig, _collate, token_loss_sum, train

from helpers import ROOT


@pytest.mark.parametrize("arch", ["tiny-llama", "tiny-gpt2", "tiny-phi"])
def test_answer_only_loss_mask(arch, tiny_dirs, tiny_data):
    from recall_circuits.training.loop import label_rows_exact

    model, tok = load_hf(tiny_dirs[arch])
    ds = load_dataset(tiny_data)
    items = [tokenize_qa(tok, e) for e in ds.qa("id")[:5]]
    batch = _collate(items, tok.pad_token_id)
    loss_sum, n = token_loss_sum(model, batch)
    ref, n_ref = 0.0, 0
    with torch.no_grad():
        for it in items:  # per-example reference: CE of each answer token given its prefix
            ids = torch.tensor([it["input_ids"]])
            logits = model(input_ids=ids).logits[0]
            for p in it["answer_pos"]:
                ref += float(torch.nn.functional.cross_entropy(logits[p - 1], ids[0, p]))
                n_ref += 1
    assert n == n_ref == sum(len(it["answer_pos"]) for it in items)
    assert abs(float(loss_sum.detach()) - ref) < 1e-3 * max(1.0, ref)
    # the unembedding at label rows only: the same loss and the same gradients
    rows, m = token_loss_sum(model, batch, label_rows_only=True)
    assert m == n and abs(float(rows.detach()) - ref) < 1e-3 * max(1.0, ref) and label_rows_exact(model, batch)
    g_full = torch.autograd.grad(token_loss_sum(model, batch)[0], list(model.parameters()))
    g_rows = torch.autograd.grad(rows, list(model.parameters()))
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(g_full, g_rows))
    # a model whose logits are post-processed (here: scaled) is caught by the check
    head = model.get_output_embeddings()
    handle = model.register_forward_hook(lambda mod, inp, out: out.__setitem__("logits", out["logits"] * 2) or out)
    try:
        assert not label_rows_exact(model, batch)
    finally:
        handle.remove()
    assert head is model.get_output_embeddings()
    assert all(lab == -100 for it in items for i, lab in enumerate(it["labels"]) if i not in it["answer_pos"])


def _weights(path):
    return load_file(str(Path(path) / "model.safetensors"))


@pytest.mark.parametrize("strategy,stop", [("two-stage", 5), ("two-stage", 6), ("two-stage", 12), ("mixed", 7)])
def test_resume_equals_uninterrupted(strategy, stop, tiny_dirs, tiny_data, tmp_path):
    """tiny-gpt2 has dropout, so this also checks that the RNG state is restored. Two-stage here has 6 BIO steps
    then 18 QA steps: 5 stops inside BIO, 6 at the phase boundary, 12 inside QA."""
    kw = dict(model=str(tiny_dirs["tiny-gpt2"]), strategy=strategy, data=str(tiny_data), epochs=2, lr=1e-3,
              batch_size=4, checkpoint_every=3, seed=1)
    full = train(TrainConfig(**kw, out=str(tmp_path / "full")), verbose=False)
    train(TrainConfig(**kw, out=str(tmp_path / "cut")), verbose=False, stop_after_steps=stop)
    assert (tmp_path / "cut" / "checkpoint").is_dir() and not (tmp_path / "cut" / "model").exists()
    resumed = train(TrainConfig(**kw, out=str(tmp_path / "cut")), resume=True, verbose=False)
    a, b = _weights(full), _weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(x)["step"] for x in open(tmp_path / "cut" / "metrics.jsonl")]
    assert steps == list(range(1, len(steps) + 1))
    if strategy == "two-stage":
        a, b = _weights(tmp_path / "full" / "after_bio"), _weights(tmp_path / "cut" / "after_bio")
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_strategies_are_fair(tiny_dirs, tiny_data, tmp_path):
    """Same number of steps, BIO passes and QA passes for both strategies."""
    n = {}
    for s in ("two-stage", "mixed"):
        train(TrainConfig(model=str(tiny_dirs["tiny-neox"]), strategy=s, data=str(tiny_data), out=str(tmp_path / s),
                          epochs=2, batch_size=4, checkpoint_every=0), verbose=False)
        rows = [json.loads(x) for x in open(tmp_path / s / "metrics.jsonl")]
        n[s] = (len(rows), sum(r["format"] == "bio" for r in rows), sum(r["format"] == "qa" for r in rows))
    assert n["two-stage"] == n["mixed"]


class _Oracle(torch.nn.Module):
    """Predicts the true next token at every position (right answers) or always token 0 (wrong answers)."""

    def __init__(self, vocab: int, right: bool):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.vocab, self.right = vocab, right

    def forward(self, input_ids, attention_mask=None):
        nxt = torch.roll(input_ids, -1, dims=1) if self.right else torch.zeros_like(input_ids)
        return SimpleNamespace(logits=torch.nn.functional.one_hot(nxt, self.vocab).float())


def test_evaluation_oracles(tiny_dirs, tiny_data):
    _, tok = load_hf(tiny_dirs["tiny-llama"])
    ds = load_dataset(tiny_data)
    good = evaluate(_Oracle(len(tok), True), tok, ds)
    bad = evaluate(_Oracle(len(tok), False), tok, ds)
    for m in ("qa_id", "qa_ood", "bio_id", "bio_ood"):
        assert good.accuracy[m] == good.first_token[m] == 1.0 and bad.accuracy[m] == bad.first_token[m] == 0.0
        assert good.interval(m).low == 1.0 and bad.interval(m).high == 0.0
    assert set(good.per_attribute["qa_ood"]) == {e["attribute"] for e in ds.qa()}
    # the flat form fine-tuning writes to results.json reads back to the same result
    flat = good.to_dict()
    assert flat["qa_id_acc"] == 1.0 and flat["bio_recall_ood_first_token"] == 1.0
    assert type(good).from_dict(flat) == good
    df = good.to_dataframe()
    assert set(df["measure"]) == {"qa_id", "qa_ood", "bio_id", "bio_ood"} and (df["acc"] == 1.0).all()
    with pytest.raises(RecallCircuitsError, match="no QA"):
        evaluate_qa(_Oracle(len(tok), True), tok, [])


@pytest.mark.parametrize("arch", ["tiny-llama", "tiny-neox", "tiny-gpt2"])
def test_teacher_forcing_equals_greedy_generation(arch, tiny_dirs, tiny_data, tmp_path):
    """Overfit a tiny model on some QA, then: exact match by teacher forcing == batched greedy generation."""
    out = train(TrainConfig(model=str(tiny_dirs[arch]), strategy="mixed", data=str(tiny_data), out=str(tmp_path / "m"),
                            epochs=25, lr=3e-3, batch_size=8, checkpoint_every=0, mix_bio_repeat=0),
                verbose=False)
    model, tok = load_hf(out)
    ex = load_dataset(tiny_data).qa()
    scores = [evaluate_qa(model, tok, [e])["acc"] for e in ex]
    gen = generate_answers(model, tok, [e["prompt"] for e in ex], max_new_tokens=8, batch_size=16)
    for e, s, g in zip(ex, scores, gen):
        ans = tokenize_qa(tok, e)
        target = [ans["input_ids"][i] for i in ans["answer_pos"]]
        assert (g[: len(target)] == target) == (s == 1.0)
    assert 0 < sum(scores) and sum(e["split"] == "id" for e, s in zip(ex, scores) if s) > 0


def test_ddp_two_processes_equal_one(tiny_dirs, tiny_data, tmp_path):
    script = ROOT / "analyses" / "finetune.py"
    common = ["--preset", "tiny", "--model", str(tiny_dirs["tiny-llama"]), "--strategy", "mixed",
              "--data", str(tiny_data), "--epochs", "1", "--batch-size", "4", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    one = subprocess.run([sys.executable, str(script), *common, "--out", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29517", str(script), *common, "--out", str(tmp_path / "two")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = _weights(tmp_path / "one" / "model"), _weights(tmp_path / "two" / "model")
    base = load_file(str(Path(tiny_dirs["tiny-llama"]) / "model.safetensors"))
    assert max((a[k] - base[k]).abs().max().item() for k in a) > 1e-4  # it trained
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5
    assert json.loads((tmp_path / "two" / "recall_circuits_train.json").read_text())["world_size"] == 2


def test_grad_accum_equals_big_batch(tiny_dirs, tiny_data, tmp_path):
    kw = dict(model=str(tiny_dirs["tiny-neox"]), strategy="mixed", data=str(tiny_data), epochs=1, batch_size=4,
              checkpoint_every=0)
    a = _weights(train(TrainConfig(**kw, out=str(tmp_path / "a")), verbose=False))
    b = _weights(train(TrainConfig(**kw, grad_accum=2, out=str(tmp_path / "b")), verbose=False))
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5


def test_gradient_checkpointing_changes_memory_not_the_run(tiny_dirs, tiny_data, tmp_path):
    kw = dict(model=str(tiny_dirs["tiny-llama"]), strategy="mixed", data=str(tiny_data), epochs=1, batch_size=4,
              checkpoint_every=0)
    a = _weights(train(TrainConfig(**kw, out=str(tmp_path / "a")), verbose=False))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)     # the deprecated name is not called where the new one is
        b = _weights(train(TrainConfig(**kw, gradient_checkpointing=True, out=str(tmp_path / "b")), verbose=False))
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6


def test_finetune_bad_input(tiny_dirs, tiny_data, tmp_path, capsys):
    from analyses.finetune import main

    base = ["--preset", "tiny", "--data", str(tiny_data), "--no-progress"]
    noqa = tmp_path / "noqa"
    noqa.mkdir()
    for f in ("people.jsonl", "bio.jsonl", "manifest.json"):
        (noqa / f).write_bytes((Path(tiny_data) / f).read_bytes())
    cases = [
        (["--preset", "tiny", "--data", str(noqa), "--strategy", "mixed", "--out", str(tmp_path / "a")], "no QA"),
    ]
    for argv in ([*base, "--strategy", "sideways", "--out", str(tmp_path / "b")],        # argparse's choices
                 ["--preset", "huge", "--data", str(tiny_data), "--strategy", "mixed", "--out", str(tmp_path / "c")]):
        with pytest.raises(SystemExit) as ex:
            main(argv)
        assert ex.value.code == 2 and "invalid choice" in capsys.readouterr().err
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
    short = tmp_path / "short"
    from recall_circuits.models.registry import build_tiny
    build_tiny("tiny-gpt2", short)
    cfg = json.loads((short / "config.json").read_text())
    cfg["n_positions"] = 8
    (short / "config.json").write_text(json.dumps(cfg))
    from transformers import AutoModelForCausalLM, GPT2Config
    AutoModelForCausalLM.from_config(GPT2Config.from_dict(cfg)).save_pretrained(short)
    cases.append(([*base, "--model", str(short), "--strategy", "mixed", "--out", str(tmp_path / "d")], "at most 8"))
    for argv, msg in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error:") and msg in err[-1], err
    exists = tmp_path / "e"
    exists.mkdir()
    (exists / "x").write_text("1")
    assert main([*base, "--strategy", "mixed", "--out", str(exists)]) == 2
    assert "--resume or --overwrite" in capsys.readouterr().err
