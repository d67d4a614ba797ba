"""Models and data for the notebooks in ``demos/``.

``demo_run()`` returns the directories of a reproduction: the default one when ``RECALL_CIRCUITS_DEMO_RUN`` names a
finished ``analyses/reproduce.py`` output (its ``data/``, ``two-stage/model``, ``two-stage/after_bio`` and
``mixed/model``), otherwise tiny ones trained on the spot with the ``tiny`` presets (a few seconds on a CPU, cached
in ``$RECALL_CIRCUITS_CACHE/demo-tiny`` so later notebooks reuse them).

Example::

    from recall_circuits.runs.demo import demo_run
    run = demo_run()
    run.base, run.mixed, run.two_stage, run.data
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from recall_circuits.artefacts import read_json
from recall_circuits.data.bios import DataConfig, generate, write_dataset
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.files import MANIFEST_FILE, RESULTS_FILE
from recall_circuits.models.registry import cache_dir
from recall_circuits.runs.stages.finetune import run_finetune
from recall_circuits.training.presets import DATA_PRESETS, TRAIN_PRESETS

ENV = "RECALL_CIRCUITS_DEMO_RUN"


@dataclass(frozen=True)
class DemoRun:
    root: Path         # a reproduction's directory: data/, two-stage/, mixed/
    base: str          # registry name or directory of the pretrained model
    kind: str          # "default" (a reproduction's checkpoints) or "tiny"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def two_stage(self) -> Path:
        return self.root / "two-stage" / "model"

    @property
    def after_bio(self) -> Path:
        return self.root / "two-stage" / "after_bio"

    @property
    def mixed(self) -> Path:
        return self.root / "mixed" / "model"


def _complete(root: Path) -> bool:
    return all((root / p).exists()
               for p in (f"data/{MANIFEST_FILE}", f"two-stage/{RESULTS_FILE}", f"mixed/{RESULTS_FILE}"))


def demo_run(root: str | os.PathLike[str] | None = None) -> DemoRun:
    """The reproduction the notebooks analyse (see the module docstring)."""
    given = root or os.environ.get(ENV)
    if given:
        r = Path(given)
        if not _complete(r):
            raise RecallCircuitsError(f"{r} is not a finished reproduction (data/, two-stage/, mixed/ with "
                                      f"results.json)")

        base = read_json(r / "mixed" / RESULTS_FILE)["config"]["model"]
        return DemoRun(r, base, "default")

    r = cache_dir() / "demo-tiny"
    if not (r / "data" / MANIFEST_FILE).is_file():
        write_dataset(generate(DataConfig(**DATA_PRESETS["tiny"])), r / "data", overwrite=True)
    cfg = TRAIN_PRESETS["tiny"]
    for strategy in ("two-stage", "mixed"):
        out = r / strategy
        if not (out / RESULTS_FILE).is_file():
            run_finetune(cfg | {"strategy": strategy, "data": str(r / "data"), "out": str(out)},
                         resume=out.exists(), verbose=False)
    return DemoRun(r, cfg["model"], "tiny")
