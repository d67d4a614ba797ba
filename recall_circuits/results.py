"""Typed results: what each analysis returns, saved and loaded as safetensors + JSON.

Every result is a frozen dataclass deriving from :class:`Result`. Its tensor fields (a ``Tensor``, or a
``dict[str, Tensor]``) go to ``result.safetensors``; every other field, which must be JSON data, goes to
``result.json`` with the type's name and schema version. ``save(dir)`` writes both (under a temporary name, then
renamed), ``Type.load(dir)`` reads them back bit for bit, ``to_dataframe()`` gives the long table a notebook wants
(per-head results carry ``layer``, ``head`` and ``label`` = ``L{l}H{h}`` columns).

Example::

    sweep = rc.single_head_sweep(ft, base, ds)          # a SingleHeadSweep
    sweep.to_dataframe().query("metric == 'qa_ood_acc'")
    sweep.save("runs/sweep"); rc.SingleHeadSweep.load("runs/sweep") == sweep
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor

from recall_circuits.artefacts import load_tensors, read_json, save_tensors, write_json
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.files import RESULT_META as META
from recall_circuits.files import RESULT_SCHEMA_VERSION, TENSORS_FILE

R = TypeVar("R", bound="Result")


def equal_values(a: Any, b: Any) -> bool:
    """Equality that treats tensors bit for bit (NaN equal to NaN) and floats with NaN equal to NaN."""
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        if not (isinstance(a, Tensor) and isinstance(b, Tensor)) or a.dtype != b.dtype or a.shape != b.shape:
            return False
        if a.is_floating_point():
            nan = a.isnan()
            return torch.equal(nan, b.isnan()) and torch.equal(a.masked_fill(nan, 0), b.masked_fill(nan, 0))
        return torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(equal_values(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(equal_values(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


@dataclasses.dataclass(frozen=True, eq=False)
class Result:
    """Base of the analyses' results (see the module docstring)."""

    SCHEMA_VERSION: ClassVar[int] = RESULT_SCHEMA_VERSION

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(
            equal_values(getattr(self, f.name), getattr(other, f.name)) for f in dataclasses.fields(self))

    __hash__ = None  # type: ignore[assignment]

    def to_dataframe(self) -> Any:
        raise NotImplementedError

    def _split(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        tensors: dict[str, Tensor] = {}
        meta: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                tensors[f.name] = v
                meta[f.name] = {"__tensor__": f.name}
            elif isinstance(v, dict) and v and all(isinstance(x, Tensor) for x in v.values()):
                for k, x in v.items():
                    tensors[f"{f.name}.{k}"] = x
                meta[f.name] = {"__tensors__": {k: f"{f.name}.{k}" for k in v}}
            else:
                meta[f.name] = v
        return tensors, meta

    def save(self, out: str | Path) -> Path:
        """Write ``result.safetensors`` and ``result.json`` into the folder ``out`` (made if needed)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        tensors, meta = self._split()
        save_tensors(out, tensors)
        write_json(out / META, {"type": type(self).__name__, "schema_version": self.SCHEMA_VERSION,
                                "fields": meta}, indent=2)
        return out

    @classmethod
    def load(cls: type[R], out: str | Path) -> R:
        """Read a result written by ``save``; the folder must hold this type at this schema version."""
        return cls._from_saved(out)

    @classmethod
    def _from_saved(cls: type[R], out: str | Path, **given: Any) -> R:
        """``load``, with the fields in ``given`` taken as they are instead of from the files."""
        out = Path(out)
        meta = read_json(out / META)
        if meta.get("type") != cls.__name__ or meta.get("schema_version") != cls.SCHEMA_VERSION:
            raise RecallCircuitsError(f"{out / META} holds {meta.get('type')} (schema {meta.get('schema_version')}), "
                                      f"not {cls.__name__} (schema {cls.SCHEMA_VERSION})")
        tensors = load_tensors(out) if (out / TENSORS_FILE).is_file() else {}
        values = {}
        for f in dataclasses.fields(cls):
            if f.name in given:
                values[f.name] = given[f.name]
                continue
            v = meta["fields"].get(f.name)
            if isinstance(v, dict) and "__tensor__" in v:
                v = tensors[v["__tensor__"]]
            elif isinstance(v, dict) and "__tensors__" in v:
                v = {k: tensors[key] for k, key in v["__tensors__"].items()}
            values[f.name] = v
        return cls(**values)


def head_label(layer: int, head: int) -> str:
    """A head's name in every table and figure: ``L{layer}H{head}``."""
    return f"L{layer}H{head}"


def head_rows(grid: Tensor, **columns: Any) -> list[dict[str, Any]]:
    """Long-table rows of a [layers, heads] grid: layer, head, label, the given constant columns, value."""
    return [{"layer": lay, "head": h, "label": head_label(lay, h), **columns, "value": float(grid[lay, h])}
            for lay in range(grid.shape[0]) for h in range(grid.shape[1])]
