"""Every example in the library's docstrings runs.

An example is the indented block after a docstring line ending in ``::``. Each runs as written, in its own copy of
one namespace of conventional names, from a working directory that holds a tiny quick run:

- ``rc``: the package; ``dataset``, ``ds``: the bioS data of ``runs/quick/data`` (12 people); ``people``: two OOD
  people; ``base``: tiny-llama; ``ft``, ``model``: tiny-llama fine-tuned mixed on that data
  (``runs/quick/mixed/model``);
  ``hf_model``, ``tokenizer``: the same fine-tuned model as a Hugging Face model;
- ``res``: ``rc.cross_task_trace(ft, dataset, ...)``; ``ks``: a grid of k; ``space``: ``rc.ParamSpace(ft)``;
  ``S``, ``mask``: the shared set at k = 100; ``shared_per_head``: its per-head counts;
- ``tokens``: a QA prompt's tokens; ``clean``, ``corrupted``, ``correct_ids``, ``wrong_ids``: a patching pair;
  ``mixed_per_person``, ``stage_per_person``: QA-OOD per-person tables of ``ft`` and ``base`` from
  ``rc.evaluate``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

import recall_circuits as rc

PACKAGE = Path(rc.__file__).parent


def _examples() -> list[tuple[str, str]]:
    """(module:n, code) for every ``::`` block of every docstring in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef,
                                                                       ast.AsyncFunctionDef)))]
        n = 0
        for node in nodes:
            doc = ast.get_docstring(node, clean=True)
            if not doc:
                continue
            for m in re.finditer(r"::\n\n((?:(?:[ ]{4}.*)?\n)+)", doc + "\n"):
                code = "\n".join(line[4:] for line in m.group(1).splitlines())
                found.append((f"{path.relative_to(PACKAGE.parent)}:{n}", code.strip() + "\n"))
                n += 1
    return found


EXAMPLES = _examples()


def test_the_examples_are_found():
    """The collector sees the examples (so the test below cannot pass by finding none)."""
    modules = {name.split(":")[0] for name, _ in EXAMPLES}
    assert len(EXAMPLES) >= 18 and {"recall_circuits/__init__.py", "recall_circuits/attribution/trace.py",
                                     "recall_circuits/models/loading.py",
                                     "recall_circuits/training/evaluation.py"} <= modules


@pytest.fixture(scope="module")
def namespace(tmp_path_factory, tiny_dirs):
    from recall_circuits.data.bios import DataConfig, generate, write_dataset
    from recall_circuits.models.loading import load_hf

    root = tmp_path_factory.mktemp("examples")
    ds = generate(DataConfig(n_people=12, seed=0))
    write_dataset(ds, root / "runs" / "quick" / "data")
    ft_dir = rc.train(rc.TrainConfig(model="tiny-llama", strategy="mixed", data=str(root / "runs/quick/data"),
                                     out=str(root / "runs/quick/mixed"), epochs=2, checkpoint_every=0),
                      verbose=False)
    pair = rc.load_pair("tiny-llama", ft_dir)
    ft, base = pair.finetuned, pair.base
    res = rc.cross_task_trace(ft, ds, rc.TraceConfig(n_people=4))
    space = rc.ParamSpace(ft)
    S = rc.shared_mask(res.influence["bio"], res.influence["qa"], 100)
    p = rc.qa_patching_pairs(ft.tokenizer, ds, 1, "all")[0]
    hf_model, tokenizer = load_hf(ft_dir)
    ev, ev_base = rc.evaluate(hf_model, tokenizer, ds, bio=False), rc.evaluate(base, base.tokenizer, ds, bio=False)
    return {
        "rc": rc, "dataset": ds, "ds": ds, "people": ds.person_ids("ood")[:2], "base": base, "ft": ft,
        "model": ft, "pair": pair, "hf_model": hf_model, "tokenizer": tokenizer, "res": res, "ks": [10, 100, 1000],
        "space": space, "S": S, "mask": S, "shared_per_head": rc.head_stats(space, S).per_head,
        "tokens": ft.to_tokens(ds.qa("ood")[0]["prompt"]), "clean": torch.tensor([p["clean"]]),
        "corrupted": torch.tensor([p["corrupted"]]), "correct_ids": torch.tensor([p["correct"]]),
        "wrong_ids": torch.tensor([p["wrong"]]),
        "mixed_per_person": ev.per_person["qa_ood"], "stage_per_person": ev_base.per_person["qa_ood"],
        "__root__": root,
    }


@pytest.mark.parametrize("name,code", EXAMPLES, ids=[n for n, _ in EXAMPLES])
def test_docstring_example_runs(name, code, namespace, monkeypatch):
    monkeypatch.chdir(namespace["__root__"])
    env = {k: v for k, v in namespace.items() if not k.startswith("__")}
    exec(compile(code, name, "exec"), env)  # noqa: S102 - the package's own docstrings
