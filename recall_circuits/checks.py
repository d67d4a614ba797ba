"""Argument checks of the library's public entry points: a wrong argument is one
:class:`~recall_circuits.errors.RecallCircuitsError` line saying what was expected, before any work, instead of an
error from deep inside Python (``cannot unpack non-iterable int``). Light: no torch import."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from recall_circuits.errors import RecallCircuitsError
from recall_circuits.hints import Bridge

SPLITS = ("id", "ood")


def split(value: Any, *, allow_all: bool = False, allow_none: bool = True) -> None:
    """``value`` names a split of people: ``id`` or ``ood`` (``all`` / None where allowed)."""
    ok = [*SPLITS, *(["all"] if allow_all else [])]
    if value is None and allow_none:
        return
    if value not in ok:
        raise RecallCircuitsError(f"unknown split {value!r}; choose from {ok}{' or None' if allow_none else ''}")


def bridge(model: Bridge, what: str = "model") -> None:
    """``model`` is a ``TransformerBridge`` (what ``rc.load_bridge`` returns)."""
    if not (hasattr(model, "cfg") and hasattr(model, "run_with_cache")):
        hint = " (rc.load_hf returns a (model, tokenizer) pair of Hugging Face objects)" if isinstance(model, tuple) \
            else ""
        raise RecallCircuitsError(f"{what} must be a TransformerBridge (rc.load_bridge), not {type(model).__name__}"
                                  f"{hint}")


def heads(value: Any, n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    """A list of (layer, head) pairs inside the model's ``n_layers`` × ``n_heads``."""
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(x, int) for x in value):
        raise RecallCircuitsError(f"heads must be a list of (layer, head) pairs, e.g. [{value}], not one pair")
    out = []
    for h in value if isinstance(value, Iterable) and not isinstance(value, str | bytes) else [value]:
        if not (isinstance(h, tuple | list) and len(h) == 2 and all(isinstance(x, int) for x in h)):
            raise RecallCircuitsError(f"heads must be (layer, head) pairs of integers, got {h!r} in {value!r}")
        layer, head = h
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise RecallCircuitsError(f"head ({layer}, {head}) is outside the model's {n_layers} layers × {n_heads} "
                                      "heads")
        out.append((layer, head))
    return out


def members(value: Iterable[Any], allowed: Iterable[Any], what: str) -> None:
    """Every item of ``value`` is one of ``allowed`` (and there is at least one)."""
    allowed = list(allowed)
    items = [value] if isinstance(value, str) else list(value)
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise RecallCircuitsError(f"unknown {what} {bad or items}; choose from {allowed}")


def positive(n: Any, what: str) -> int:
    """``n`` is a whole number of at least 1."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise RecallCircuitsError(f"{what} must be a whole number >= 1, got {n!r}")
    return n


def count(n: Any, available: int, what: str, where: str = "the data") -> int:
    """``n`` is a whole number from 1 to ``available`` (a count larger than the data holds is an error, not a
    silent cut)."""
    positive(n, what)
    if n > available:
        raise RecallCircuitsError(f"{what} = {n}, but {where} has only {available}")
    return n


def qa_example(example: Any, what: str = "example") -> None:
    """``example`` is a QA example of ``Dataset.qa()`` (a dict with its text and spans)."""
    need = ("text", "subject", "relation", "value")
    if not isinstance(example, dict) or any(k not in example for k in need):
        got = (type(example).__name__ if not isinstance(example, dict)
               else f"a dict without {[k for k in need if k not in example]}")
        raise RecallCircuitsError(f"{what} must be a QA example of Dataset.qa() (a dict with text and role spans), "
                                  f"not {got}")


def people(value: Any, known: Iterable[int], what: str = "people") -> list[int]:
    """Person ids (a list, or a tensor's ``tolist()``) that the dataset has."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, int):
        value = [value]
    items = list(value)
    if not all(isinstance(p, int) and not isinstance(p, bool) for p in items):
        raise RecallCircuitsError(f"{what} must be person ids (integers), got {items[:5]!r}")
    missing = sorted(set(items) - set(known))
    if missing:
        raise RecallCircuitsError(f"{what}: the dataset has no person {missing[:5]}")
    return items
