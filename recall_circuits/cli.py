"""The command-line grammar shared by the ``analyses/`` scripts (light: no torch import before the arguments are
checked).

One spelling for one thing, on every script:

- a single model is ``--model NAME_OR_PATH`` (a registry name such as ``smollm2-135m`` or a checkpoint directory);
  a pretrained / fine-tuned pair is ``--base`` and ``--finetuned``; a set of named models is
  ``--models NAME=PATH [NAME=PATH ...]``, a set of named fine-tuning runs ``--runs NAME=DIR [NAME=DIR ...]``;
- ``--data DIR`` is a generated dataset, ``--out DIR`` the run directory, ``--overwrite`` recomputes into it;
- people counts: ``--people N`` is how many people a stage generates, traces or measures; ``--eval-people N`` caps
  the people whose answers an evaluation scores; pairs of prompts are ``--pairs N``;
- lists are comma-separated (``--grid 0,1,2,4``, ``--components Q,K``);
- every script that loads a model takes ``--device`` and ``--dtype``; every script with long work takes
  ``--progress / --no-progress``;
- ``--help`` shows every option's default. ``tests/test_cli.py`` holds the scripts to this.

A script is ``@script(build_parser)`` over ``main(args) -> int``: the arguments are parsed before anything else
(argparse's errors exit 2), a :class:`~recall_circuits.errors.RecallCircuitsError` becomes one ``error: ...`` line
and exit code 2, Ctrl-C one line saying how to resume and exit code 130; log lines go to stderr. The library itself
never configures logging or prints.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

from recall_circuits.errors import RecallCircuitsError

DTYPES = ("float32", "bfloat16", "float16")
SPLITS = ("id", "ood", "all")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The scripts' help: the module docstring as written (its examples keep their line breaks) and every option's
    default, as a user types it (``0,1,2``, not a Python list; an option whose text already says where its default
    comes from, e.g. "the preset's", gets no second "(default: None)")."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default:" in text or "(default" in text or action.required:
            return text
        if isinstance(action.default, list | tuple) and action.default and not action.nargs:
            return text + " (default: " + ",".join(str(v) for v in action.default) + ")"
        return super()._get_help_string(action)


def parser(description: str | None) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with the scripts' help layout."""
    return argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)


def add_device_args(ap: argparse.ArgumentParser, *, device: str | None = "cpu", dtype: str | None = "float32",
                    dtypes: tuple[str, ...] = DTYPES) -> None:
    """``--device`` and ``--dtype``, the same on every script that loads a model."""
    preset = " (default: the preset's)"     # None: the script's preset decides
    ap.add_argument("--device", default=device, help="torch device for the models, e.g. cpu, cuda, cuda:1"
                    + (preset if device is None else ""))
    ap.add_argument("--dtype", default=dtype, choices=dtypes,
                    help="dtype the models are loaded in (analyses compare raw weights: float32 is the reference)"
                    + (preset if dtype is None else ""))


def add_progress_arg(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                    help="progress bars on long work")


def add_run_args(ap: argparse.ArgumentParser, *, data: bool = True) -> None:
    """``--data`` (when the stage reads a dataset), ``--out`` and ``--overwrite``."""
    if data:
        ap.add_argument("--data", required=True, help="dataset directory (analyses/make_data.py)")
    ap.add_argument("--out", required=True, help="run directory: created; a complete run there from the same "
                    "inputs is reported and reused, an interrupted one is computed again")
    ap.add_argument("--overwrite", action="store_true", help="compute again, replacing the run directory this "
                    "command wrote in --out (never a folder holding anything else)")


def add_pair_args(ap: argparse.ArgumentParser) -> None:
    """``--base`` and ``--finetuned``: the pretrained / fine-tuned pair an analysis compares."""
    ap.add_argument("--base", required=True, help="pretrained model: registry name or checkpoint directory")
    ap.add_argument("--finetuned", required=True, help="fine-tuned checkpoint directory")


def add_models_arg(ap: argparse.ArgumentParser) -> None:
    """``--models NAME=PATH [NAME=PATH ...]``: a set of named models measured side by side."""
    ap.add_argument("--models", nargs="+", required=True, metavar="NAME=PATH",
                    help="named models: NAME=registry name or checkpoint directory")


def comma_list(item: Callable[[str], Any], what: str) -> Callable[[str], list[Any]]:
    """An argparse ``type`` for comma-separated lists (``0,1,2``), each item converted by ``item``."""
    def parse(text: str) -> list[Any]:
        try:
            values = [item(x.strip()) for x in text.split(",")]
        except (ValueError, KeyError) as exc:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from exc
        return values
    parse.__name__ = what       # argparse names the type in its error message
    return parse


def model_set_parser(description: str | None, *, people: int = 10) -> argparse.ArgumentParser:
    """A parser for scripts that compare several models on one dataset: ``--models``, ``--data``, ``--out``,
    ``--people``, ``--split``, ``--overwrite``, ``--device/--dtype``, ``--progress``."""
    ap = parser(description)
    add_models_arg(ap)
    add_run_args(ap)
    ap.add_argument("--people", type=int, default=people, help="people measured")
    ap.add_argument("--split", default="ood", choices=SPLITS, help="which people: ID, OOD or both halves")
    add_device_args(ap)
    add_progress_arg(ap)
    return ap


def script(build_parser: Callable[[], argparse.ArgumentParser]
           ) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[list[str] | None], int]]:
    """Make ``run(args) -> int`` a script's ``main(argv=None) -> int`` (see the module docstring)."""
    def decorate(run: Callable[[argparse.Namespace], int]) -> Callable[[list[str] | None], int]:
        @functools.wraps(run)
        def main(argv: list[str] | None = None) -> int:
            args = build_parser().parse_args(argv)
            if not logging.getLogger().handlers:
                logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                                    datefmt="%H:%M:%S")
            try:
                return run(args)
            except RecallCircuitsError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            except KeyboardInterrupt:
                print("interrupted: run the same command again to resume (completed stages and checkpoints are "
                      "kept)", file=sys.stderr)
                return 130

        main.build_parser = build_parser  # type: ignore[attr-defined]
        return main

    return decorate
