"""A wrong argument to a public entry point is one readable RecallCircuitsError line, raised before any work; a
count larger than the data holds is an error, not a silent cut."""

import pytest
import torch

import recall_circuits as rc
from recall_circuits.errors import RecallCircuitsError


@pytest.fixture(scope="module")
def things(bridges, tiny_data, tiny_dirs):
    return bridges["tiny-llama"], rc.load_dataset(tiny_data), tiny_dirs["tiny-llama"]


def _one_line(exc):
    assert "\n" not in str(exc.value)
    return str(exc.value)


CASES = r"""
import json, sys, torch
import recall_circuits as rc
from recall_circuits.errors import RecallCircuitsError
path, data = sys.argv[1], sys.argv[2]
ft, ds = rc.load_bridge(path), rc.load_dataset(data)
cases = [
    (lambda: rc.restore_heads(ft, ft, [1, 2]).__enter__(), "(layer, head) pairs of integers"),
    (lambda: rc.restore_heads(ft, ft, (1, 2)).__enter__(), "a list of (layer, head) pairs"),
    (lambda: rc.restore_heads(ft, ft, [(9, 0)]).__enter__(), "outside the model's 2 layers"),
    (lambda: rc.restore_heads(ft, ft, [(1, 0)], components=("X",)).__enter__(), "unknown components ['X']"),
    (lambda: rc.answer_logprob(ft, "What is the birth city of ...?"), "a QA example of Dataset.qa()"),
    (lambda: rc.cross_task_trace(rc.load_hf(path), ds, rc.TraceConfig(n_people=2)),
     "must be a TransformerBridge (rc.load_bridge), not tuple (rc.load_hf returns"),
    (lambda: rc.cross_task_trace(ft, ds, rc.TraceConfig(n_people=500)), "n_people = 500, but the id split has"),
    (lambda: rc.role_masses(ft, ds, torch.tensor([0, 999])), "the dataset has no person [999]"),
    (lambda: rc.qa_patching_pairs(ft.tokenizer, ds, 1, "test"), "unknown split 'test'"),
    (lambda: rc.qa_patching_pairs(ft.tokenizer, ds, 1000, "ood"), "n_pairs = 1000, but the ood questions make"),
    (lambda: ds.qa("train"), "unknown split 'train'"),
    (lambda: ds.bio("train"), "unknown split 'train'"),
]
out = []
for call, msg in cases:
    try:
        call()
        out.append([msg, None])
    except RecallCircuitsError as exc:
        out.append([msg, str(exc)])
    except Exception as exc:
        out.append([msg, f"{type(exc).__name__} (not a RecallCircuitsError): {exc}"])
print(json.dumps(out))
"""


def test_library_calls_with_wrong_arguments(things, tiny_data):
    """In normal use (no type-checking import hook, as under pytest), each wrong call is one readable line."""
    import json
    import os
    import subprocess
    import sys

    from helpers import ROOT

    _, _, path = things
    env = {k: v for k, v in os.environ.items() if k != "RECALL_CIRCUITS_TYPECHECK"} | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", CASES, str(path), str(tiny_data)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for msg, got in json.loads(done.stdout.strip().splitlines()[-1]):
        assert got is not None and msg in got and "\n" not in got, (msg, got)


def test_right_arguments_still_work(things):
    ft, ds, _ = things
    ids = ds.person_ids("ood")[:2]
    assert rc.role_masses(ft, ds, torch.tensor(ids)).mean.shape[0] == 2        # a tensor of ids is fine
    with rc.restore_heads(ft, ft, [(1, 0)], components=("Q", "K")):
        pass
    assert isinstance(rc.answer_logprob(ft, ds.qa("id")[0]), float)
    assert len(rc.qa_patching_pairs(ft.tokenizer, ds, 1, "all")) == 1


def test_scripts_refuse_counts_larger_than_the_data(things, tiny_data, tmp_path, capsys):
    from analyses.attention_compare import main as attention_main
    from analyses.consistency import main as consistency_main
    from analyses.gradient_trace import main as trace_main

    _, ds, path = things
    n_ood = len(ds.person_ids("ood"))
    models = ["--models", f"m={path}", "--data", str(tiny_data), "--no-progress"]
    for main in (attention_main, consistency_main):
        assert main([*models, "--people", "500", "--out", str(tmp_path / "x")]) == 2
        assert f"--people = 500, but the ood split of {tiny_data} has only {n_ood}" in capsys.readouterr().err
        assert not (tmp_path / "x").exists()
    trace = ["--base", str(path), "--finetuned", str(path), "--data", str(tiny_data), "--no-ablation",
             "--no-baseline", "--no-progress"]
    assert trace_main([*trace, "--people", "500", "--out", str(tmp_path / "t")]) == 2
    assert "n_people = 500, but the id split has only" in capsys.readouterr().err
    assert trace_main([*trace, "--out", str(tmp_path / "t")]) == 0            # the default: the split's people
    import json

    cfg = json.loads((tmp_path / "t" / "config.json").read_text())
    assert cfg["config"]["trace"]["n_people"] == len(ds.person_ids("id")) < 20


def test_the_type_checking_switch(things):
    """RECALL_CIRCUITS_TYPECHECK=1 turns on, outside the suite, the argument and shape checks the suite runs with."""
    import os
    import subprocess
    import sys

    from helpers import ROOT

    code = ("import recall_circuits.interventions.patching as p, torch\n"
            "try:\n    p.logit_diff_metric(torch.tensor([[1]]), torch.tensor([2]))\nexcept Exception as e:\n"
            "    print(type(e).__module__)\nelse:\n    print('unchecked')\n")
    procs = {flag: subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(ROOT),
                                                                          RECALL_CIRCUITS_TYPECHECK=flag),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for flag in ("1", "0")}
    for flag, want in (("1", "jaxtyping"), ("0", "unchecked")):          # both at once: most of each is the import
        out, err = procs[flag].communicate(timeout=120)
        assert out.strip().splitlines()[-1].startswith(want), (flag, out, err[-2000:])


def test_a_corrupted_data_file_names_its_line(tiny_data, tmp_path):
    import shutil

    data = tmp_path / "d"
    shutil.copytree(tiny_data, data)
    lines = (data / "qa.jsonl").read_text().splitlines()
    lines[40] = lines[40][:30]
    (data / "qa.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(RecallCircuitsError, match=r"qa.jsonl is corrupted at line 41 \(") as exc:
        rc.load_dataset(data)
    assert "\n" not in str(exc.value)
