"""The learning-curve stage (``analyses/learning_curve.py``): :func:`recall_circuits.training.curve.learning_curve`
of several named fine-tuning runs into one run directory, with each run's training loss over windows of steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recall_circuits.artefacts import check_run_dir, foreign_entries, read_json, save_figure, start_run
from recall_circuits.data.bios import load_dataset
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.files import CONFIG_FILE, TRAIN_META
from recall_circuits.runs.stages.base import RunOptions, StageSummary
from recall_circuits.training.curve import (
    LearningCurve,
    curve_figure,
    learning_curve,
    run_logs,
    run_points,
    windows_figure,
)

RESERVED = {"points", "figures"}   # subfolders of the run directory: not allowed as run names


@dataclass(frozen=True)
class CurveConfig(RunOptions):
    runs: dict[str, str]                 # name → fine-tuning run directory
    out: str | Path
    data: str | Path | None = None       # None: the dataset each run was trained on
    bio: bool = False                    # also BIO recall at every point
    batch_size: int = 32
    verbose: bool = field(default=False, kw_only=True)    # (the learning curve's bars are off by default)

    def check(self) -> None:
        if self.batch_size < 1:
            raise RecallCircuitsError(f"batch size must be >= 1, got {self.batch_size}")
        for name, d in self.runs.items():
            if name in RESERVED or "/" in name or name.startswith("."):
                raise RecallCircuitsError(f"run name {name!r} is not allowed (a plain name other than "
                                          f"{', '.join(sorted(RESERVED))})")
            run_points(d)                                   # a folder without checkpoints: one-line error
            if self.data is None and not (Path(d) / TRAIN_META).is_file():
                raise RecallCircuitsError(f"{d} has no {TRAIN_META}: pass --data, the dataset it was trained on")
        if self.data is not None:
            load_dataset(self.data)


@dataclass(frozen=True)
class CurveSummary(StageSummary):
    runs: dict[str, dict[str, Any]]      # per run: its folder, the points (and loss_windows when it logged losses)


def _open(cfg: CurveConfig, out: Path) -> None:
    """The same runs, data and options, finished or not, reuse their points from out/points (the snapshots a run
    has may have grown) and write the summary again; anything else is checked as a new run directory."""
    config = {"runs": {n: str(Path(d).resolve()) for n, d in cfg.runs.items()},
              "data": None if cfg.data is None else str(Path(cfg.data).resolve()), "bio": cfg.bio}
    recorded = read_json(out / CONFIG_FILE).get("config") or {} if (out / CONFIG_FILE).is_file() else {}
    own = ("points", *cfg.runs, *(recorded.get("runs") or {}))       # the curves this run and the one there write
    same = (not cfg.overwrite and (out / CONFIG_FILE).is_file() and not foreign_entries(out, own)
            and recorded == config)
    if not same:
        check_run_dir(out, overwrite=cfg.overwrite, own=own)
        start_run(out, config, overwrite=cfg.overwrite, own=own)


def run(cfg: CurveConfig) -> tuple[CurveSummary, dict[str, LearningCurve]]:
    """``out/points/<name>/`` keeps each point as it is measured (a rerun of the same command resumes),
    ``out/<name>/`` the ``LearningCurve``, ``out/summary.json`` the accuracies with their intervals and each run's
    training loss over windows of about a hundredth of the longest run (``loss_windows``), ``out/figures/`` the
    plots (QA accuracy, training loss). Everything is checked before any model loads or any file is written."""
    out = Path(cfg.out)
    cfg.check()
    _open(cfg, out)
    curves = {name: learning_curve(d, data=cfg.data, bio=cfg.bio, batch_size=cfg.batch_size, device=cfg.device,
                                   dtype=cfg.dtype, cache=out / "points" / name, verbose=cfg.verbose)
              for name, d in cfg.runs.items()}
    runs: dict[str, dict[str, Any]] = {}
    for name, curve in curves.items():
        curve.save(out / name)
        runs[name] = {"run": curve.run, "points": curve.to_dataframe().to_dict(orient="records")}
    save_figure(out, curve_figure(curves), "learning_curve")
    logs, every = run_logs(cfg.runs, 100)
    if logs:
        windows = {name: lg.windows(every).to_dict(orient="records") for name, lg in logs.items()}
        for name, rows in windows.items():
            runs[name]["loss_windows"] = rows
        save_figure(out, windows_figure(windows, every), "training_loss")
    summary = CurveSummary(runs=runs)
    summary.save(out)
    return summary, curves
