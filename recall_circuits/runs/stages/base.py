"""What every stage shares: its typed summary (``summary.json`` as fields) and the opening of its run directory.

A stage module (``runs/stages/<stage>.py``) holds a frozen ``<Stage>Config``, a ``<Stage>Summary`` and
``run(cfg) -> <Stage>Summary``: check the options, then :func:`open_run` (reuse a finished run from the same inputs,
refuse a changed one, check the input runs), load, compute with the analysis packages, save tensors, figures and
the summary.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from recall_circuits.artefacts import check_input_run, load_summary, reuse_or_check, save_summary
from recall_circuits.errors import RecallCircuitsError

S = TypeVar("S", bound="StageSummary")


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a stage runs, not what it computes (not part of its identity): every stage config has these, as keywords."""

    overwrite: bool = dataclasses.field(default=False, kw_only=True)   # recompute a finished run from other inputs
    verbose: bool = dataclasses.field(default=True, kw_only=True)      # progress bars
    device: str = dataclasses.field(default="cpu", kw_only=True)
    dtype: str = dataclasses.field(default="float32", kw_only=True)


@dataclasses.dataclass(frozen=True)
class StageSummary:
    """A stage's ``summary.json`` as a typed object: one field per top-level key. The fields named in
    ``OPTIONAL`` are absent from the file when None (a stage writes them only when it computed them)."""

    OPTIONAL: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if not (f.name in self.OPTIONAL and getattr(self, f.name) is None)}

    @classmethod
    def from_dict(cls: type[S], d: dict[str, Any]) -> S:
        """From a summary as written (its ``schema_version`` dropped); a key the type does not know is an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names - {"schema_version"})
        if unknown:
            raise RecallCircuitsError(f"a {cls.__name__} has no fields {unknown}: the run was written by another "
                                      "version (recompute it with --overwrite)")
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def load(cls: type[S], run: str | Path) -> S:
        """The summary of a finished run directory."""
        return cls.from_dict(load_summary(run))

    def save(self, run: Path) -> None:
        save_summary(run, self.to_dict())


def open_run(out: str, config: dict[str, Any], checkpoints: dict[str, str], *, overwrite: bool,
             inputs: Iterable[tuple[str | None, str, dict[str, str]]] = ()) -> dict[str, Any] | None:
    """Before any model loads: the summary of a finished run in ``out`` from the same ``config``, checkpoints and
    code (to reuse), or None when the run is to be computed; a changed run or a folder not ours is refused in one
    line. ``inputs``: (run directory or None, what it is, the checkpoints it must have been computed on)."""
    if (done := reuse_or_check(out, config, overwrite=overwrite, checkpoints=checkpoints)) is not None:
        return done
    for run, what, theirs in inputs:
        if run:
            check_input_run(run, what, theirs)
    return None
