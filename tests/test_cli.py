"""The command-line grammar (recall_circuits.cli): every script in analyses/ spells the same things the same way,
shows its defaults, documents every flag, and its docstring's example lines parse."""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.stem for p in (ROOT / "analyses").glob("*.py") if p.stem != "__init__")
NO_MODEL = {"make_data"}                  # scripts that load no model
# spellings the grammar replaced: one name for one thing
RETIRED = {"--n-people", "--max-eval-people", "--n-pairs", "--num-people", "--model-dir", "--pretrained", "--ft"}


def _parser(name: str) -> argparse.ArgumentParser:
    return importlib.import_module(f"analyses.{name}").build_parser()


def _options(ap: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in ap._actions for s in a.option_strings}


def test_the_scripts_are_all_here():
    assert {"gradient_trace", "head_ablation", "activation_patching", "attention_compare", "consistency",
            "grafting", "finetune", "make_data", "reproduce", "regime_search", "learning_curve"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_one_grammar(name):
    ap = _parser(name)
    opts = _options(ap)
    assert not RETIRED & set(opts), (name, RETIRED & set(opts))
    if name not in NO_MODEL:
        assert {"--device", "--dtype", "--progress", "--no-progress"} <= set(opts), name
        assert opts["--dtype"].choices and "float32" in opts["--dtype"].choices
    if "--base" in opts or "--finetuned" in opts:          # a pair is always --base and --finetuned
        assert {"--base", "--finetuned"} <= set(opts) and opts["--base"].required and opts["--finetuned"].required
    if "--model" in opts:                                   # one model
        assert opts["--model"].nargs is None and not isinstance(opts["--model"], argparse._AppendAction)
    if "--models" in opts:                                  # a set of named models, one flag
        assert opts["--models"].nargs == "+" and opts["--models"].metavar == "NAME=PATH"
    if "--runs" in opts:                                    # a set of named training runs, one flag
        assert opts["--runs"].nargs == "+" and opts["--runs"].metavar == "NAME=DIR"
    assert not any(isinstance(a, argparse._AppendAction) for a in ap._actions), "lists are NAME=PATH ... or a,b,c"
    if "--out" in opts and name not in ("regime_search", "scale_search"):   # they also list and tabulate
        assert opts["--out"].required


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_names_every_flag_and_its_default(name):
    ap = _parser(name)
    formatter = ap._get_formatter()
    assert isinstance(formatter, argparse.ArgumentDefaultsHelpFormatter)
    for action in ap._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, (name, action.option_strings)
        if not action.required:         # the default, or where it comes from ("the preset's")
            h = formatter._get_help_string(action)
            assert "%(default)" in h or "default:" in h or "(default" in h, (name, action.option_strings)
    text = ap.format_help()
    assert "(default: " in text and "--help" in text
    flat = " ".join(text.split())
    assert "preset's) (default: None)" not in flat and "(default: ['" not in flat   # defaults as a user types them
    doc = importlib.import_module(f"analyses.{name}").__doc__ or ""
    assert ("\\\n" in doc) == ("\\\n" in Path(ROOT / "analyses" / f"{name}.py").read_text().split('"""')[1]), \
        "a docstring's line continuations are kept in --help"


def _examples(name: str) -> list[list[str]]:
    """The example command lines of the script's docstring, continuation lines joined, comments dropped."""
    doc = importlib.import_module(f"analyses.{name}").__doc__
    joined = re.sub(r"\\\n\s*", " ", doc)
    lines = [ln.strip() for ln in joined.splitlines() if ln.strip().startswith(f"python analyses/{name}.py")]
    return [shlex.split(ln.split("  #")[0])[2:] for ln in lines]


@pytest.mark.parametrize("name", SCRIPTS)
def test_docstring_examples_parse(name):
    examples = _examples(name)
    assert examples, f"{name} shows no example"
    ap = _parser(name)
    for argv in examples:
        ap.parse_args(argv)        # SystemExit(2) on an example that the grammar does not take


def test_lists_are_comma_separated():
    from analyses.head_ablation import build_parser

    args = build_parser().parse_args(["--base", "b", "--finetuned", "f", "--data", "d", "--out", "o",
                                      "--grid", "0,1,4", "--components", "Q,K"])
    assert args.grid == [0, 1, 4] and args.components == ["Q", "K"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--base", "b", "--finetuned", "f", "--data", "d", "--out", "o", "--grid", "1,x"])


def test_finetune_options_are_one_grammar_for_the_script_and_the_library():
    """``analyses/finetune.py`` and the regime search's arms read the same options into the same ``TrainConfig``
    fields: the preset's values, each option given replacing its field; a bad option is one library error."""
    from recall_circuits.errors import RecallCircuitsError
    from recall_circuits.training.options import config_from_options, train_config
    from recall_circuits.training.presets import TRAIN_PRESETS

    from analyses.finetune import build_parser

    argv = ["--strategy", "mixed", "--data", "d", "--out", "o", "--preset", "tiny", "--epochs", "7",
            "--schedule", "constant", "--no-freeze-embeddings", "--dtype", "bfloat16"]
    cfg = config_from_options(argv)
    assert cfg == train_config(build_parser().parse_args(argv))
    assert cfg == TRAIN_PRESETS["tiny"] | {"epochs": 7, "schedule": "constant", "freeze_embeddings": False,
                                          "bf16": True, "strategy": "mixed", "data": "d", "out": "o"}
    assert config_from_options(argv[:6])["epochs"] == TRAIN_PRESETS["cpu"]["epochs"]
    for bad in (argv[:4], [*argv, "--epochs", "x"], [*argv, "--no-such-option"]):
        with pytest.raises(RecallCircuitsError, match="fine-tuning options"):
            config_from_options(bad)


def test_model_sets_are_named_and_distinct():
    from recall_circuits.errors import RecallCircuitsError
    from recall_circuits.models.loading import parse_model_specs

    assert parse_model_specs(["a=x", "b=y"]) == {"a": "x", "b": "y"}
    for bad in (["a=x", "a=y"], ["=x"], ["a="], ["x"]):
        with pytest.raises(RecallCircuitsError, match="--models"):
            parse_model_specs(bad)


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_runs_and_keeps_the_examples(name, capsys):
    mod = importlib.import_module(f"analyses.{name}")
    with pytest.raises(SystemExit) as ex:
        mod.main(["--help"])
    assert ex.value.code == 0
    text = capsys.readouterr().out
    example = next(line for line in mod.__doc__.splitlines() if "python analyses/" in line)
    assert example.rstrip() in text          # the docstring's example lines are printed as written
