"""Argument sets shared by the ``analyses/`` scripts (light: no torch import before the arguments are checked)."""

from __future__ import annotations

import argparse


DTYPES = ("float32", "bfloat16", "float16")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The scripts' help: the module docstring as written (its examples keep their line breaks) and every option's
    default."""


def add_device_args(ap: argparse.ArgumentParser) -> None:
    """``--device`` and ``--dtype``, the same on every script that loads a model."""
    ap.add_argument("--device", default="cpu", help="torch device for the models, e.g. cpu, cuda, cuda:1")
    ap.add_argument("--dtype", default="float32", choices=DTYPES,
                    help="dtype the models are loaded in (analyses compare raw weights: float32 is the reference)")


def model_set_parser(description: str | None) -> argparse.ArgumentParser:
    """A parser for scripts that compare several models on one dataset: ``--model NAME=PATH`` (repeatable),
    ``--data``, ``--out``, ``--n-people``, ``--split``, ``--overwrite``."""
    ap = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    ap.add_argument("--model", action="append", default=[], help="NAME=PATH (repeatable)")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--n-people", type=int, default=10)
    ap.add_argument("--split", default="ood", choices=["id", "ood", "all"])
    ap.add_argument("--overwrite", action="store_true")
    add_device_args(ap)
    return ap
