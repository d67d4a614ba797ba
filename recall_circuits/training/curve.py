"""Learning curves: QA accuracy (ID and OOD) of every snapshot a fine-tuning run kept.

A run trained with ``snapshot_every > 0`` keeps ``snapshots/step-NNNNNN`` (weights only); :func:`learning_curve`
evaluates each of them and the run's final model with :func:`~recall_circuits.training.evaluation.evaluate`, so
one can see *when* a recipe learns the trained questions and whether extraction for OOD people follows (Physics of
LMs 3.1: OOD accuracy rises only after the ID questions are learned). Each point keeps the per-person table, so
every accuracy has its bootstrap interval over people. :func:`training_log` reads the run's training loss, step by
step, with a summary over windows of steps (``TrainingLog.windows``) that shows where a loss came back up.

Example::

    curve = rc.learning_curve("runs/quick/mixed", cache="runs/curve/mixed")   # a LearningCurve
    curve.to_dataframe().query("measure == 'qa_ood'")       # step, phase, acc, low, high, first_token_acc
    rc.training_log("runs/quick/mixed").windows(1000)        # first_step, last_step, format, n, mean, max
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from recall_circuits.artefacts import checkpoint_identity, read_json, write_json
from recall_circuits.data.bios import load_dataset
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.files import METRICS_FILE, SNAPSHOTS_DIR, TRAIN_META
from recall_circuits.models.loading import load_hf
from recall_circuits.results import Result
from recall_circuits.training import evaluation as scoring  # called as scoring.evaluate: replaceable in tests
from recall_circuits.training.evaluation import Evaluation

log = logging.getLogger(__name__)


def run_points(run_dir: str | Path) -> tuple[dict[int, Path], dict[int, str | None]]:
    """The checkpoints along a training run: ``{step: folder}`` for every finished snapshot and the final
    ``model/`` (at the run's last step, in place of a snapshot of the same step), and ``{step: phase}`` from
    ``metrics.jsonl`` (read by :func:`training_log`: the last record of a step wins, as a resumed run may repeat
    steps). A run with neither is a one-line error."""
    run = Path(run_dir)
    points = {int(d.name.split("-")[1]): d for d in sorted((run / SNAPSHOTS_DIR).glob("step-*"))
              if d.is_dir() and not d.name.endswith(".partial")}
    if (run / "model").is_dir() and (run / TRAIN_META).is_file():   # the final model, also where a snapshot was
        points[int(read_json(run / TRAIN_META).get("steps", max(points, default=0)))] = run / "model"  # taken
    if not points:
        raise RecallCircuitsError(f"{run_dir} has neither snapshots/ nor a finished model/ (train with "
                                  "snapshot_every > 0)")
    phase: dict[int, str | None] = {}
    if (run / METRICS_FILE).is_file():
        lg = training_log(run)
        phase = dict(zip(lg.step, lg.phase))
    return dict(sorted(points.items())), phase


@dataclass(frozen=True, eq=False)
class LearningCurve(Result):
    """QA accuracy along a training run (:func:`learning_curve`): at each kept ``step``, the ``phase`` it was in
    (``bio``, ``qa``, ``mixed``; None when unknown), the checkpoint (``path``) and its evaluation in the flat form
    of ``results.json`` (``qa_ood_acc``, ``qa_ood_per_person``, …; with ``bio`` also BIO recall)."""

    run: str
    step: list[int]
    phase: list[str | None]
    path: list[str]
    evaluation: list[dict[str, Any]]

    def measures(self) -> list[str]:
        return list(Evaluation.from_dict(self.evaluation[0]).accuracy) if self.evaluation else []

    def to_dataframe(self, *, n_draws: int = 2000) -> Any:
        """One row per step and measure: ``step``, ``phase``, ``measure``, ``acc`` with its 95% bootstrap interval
        over people (``low``, ``high``), ``first_token_acc`` and ``n`` (questions or facts)."""
        import pandas as pd  # noqa: PLC0415  (pandas loads only for a DataFrame)

        rows = []
        for step, phase, flat in zip(self.step, self.phase, self.evaluation):
            ev = Evaluation.from_dict(flat)
            for m, acc in ev.accuracy.items():
                iv = ev.interval(m, n_draws=n_draws)
                rows.append({"step": step, "phase": phase, "measure": m, "acc": acc, "low": iv.low, "high": iv.high,
                             "first_token_acc": ev.first_token[m],
                             "n": sum(v[1] for v in ev.per_person[m].values())})
        return pd.DataFrame(rows)


def learning_curve(run_dir: str | Path, *, data: str | Path | None = None, bio: bool = False, batch_size: int = 32,
                   device: str = "cpu", dtype: str = "float32", cache: str | Path | None = None,
                   verbose: bool = False, max_people: int | None = None) -> LearningCurve:
    """:func:`~recall_circuits.training.evaluation.evaluate` (QA ID / OOD and QA-OOD's chance floor; with ``bio``
    also BIO recall) of every
    snapshot of ``run_dir`` and of its final model, in step order. ``data``: the dataset (default: the one the run
    was trained on, from its ``recall_circuits_train.json``). ``cache``: a folder where each point is kept as
    ``step-NNNNNN.json`` as soon as it is measured and reused when the checkpoint, data and options are the same
    (an interrupted curve resumes). ``max_people``: evaluate on the first this many ID and this many OOD people
    only (a large run's curve in seconds)."""
    run = Path(run_dir)
    points, phase = run_points(run)
    if data is None:
        if not (run / TRAIN_META).is_file():
            raise RecallCircuitsError(f"{run} has no {TRAIN_META}: pass the dataset it was trained on (data=)")
        data = read_json(run / TRAIN_META)["config"]["data"]
    ds = load_dataset(data)
    cache = Path(cache) if cache is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    evaluations, tok = [], None
    for step, folder in tqdm(points.items(), desc=f"learning curve {run.name}", unit="checkpoint",
                             disable=not verbose):
        key = {"checkpoint": checkpoint_identity(folder), "data": ds.manifest, "bio": bio, "floor": True,
               **({"max_people": max_people} if max_people is not None else {})}
        f = cache / f"step-{step:06d}.json" if cache is not None else None
        if f is not None and f.is_file():
            kept = read_json(f)
            if kept.get("key") == json.loads(json.dumps(key)):
                evaluations.append(kept["evaluation"])
                continue
        log.info("learning curve %s: step %d (%s)", run, step, folder.name)
        model, loaded_tok = load_hf(folder, device=device, dtype=dtype)
        tok = tok or loaded_tok
        flat = scoring.evaluate(model, tok, ds, batch_size=batch_size, bio=bio, floor=True,
                                max_people=max_people).to_dict()
        del model
        if f is not None:
            write_json(f, {"key": key, "evaluation": flat}, sort_keys=True)
        evaluations.append(flat)
    steps = list(points)
    return LearningCurve(str(run), steps, [phase.get(s) for s in steps], [str(points[s]) for s in steps], evaluations)


@dataclass(frozen=True, eq=False)
class TrainingLog(Result):
    """A run's training loss, step by step (:func:`training_log`): each optimiser ``step`` with its ``phase``
    (``bio``, ``qa``, ``mixed``), the ``format`` of its batch (``bio``, ``qa``; None where the log does not say),
    the mean token ``loss`` and the learning rate ``lr``."""

    run: str
    step: list[int]
    phase: list[str | None]
    format: list[str | None]
    loss: list[float]
    lr: list[float | None]

    def to_dataframe(self) -> Any:
        """One row per step: ``step``, ``phase``, ``format``, ``loss``, ``lr``."""
        import pandas as pd  # noqa: PLC0415  (pandas loads only for a DataFrame)

        return pd.DataFrame({"step": self.step, "phase": self.phase, "format": self.format, "loss": self.loss,
                             "lr": self.lr})

    def windows(self, every: int = 1000) -> Any:
        """The loss summarised over windows of ``every`` steps (steps 1..every, every+1..2·every, …), per batch
        format: ``first_step``, ``last_step`` (the window's bounds), ``format``, ``n`` (steps), ``mean``, ``max``.
        A loss that comes back up after reaching near zero (a spike of a constant learning rate) shows as a window
        whose mean or max rises again, and a run that ends in one as a high last window."""
        import pandas as pd  # noqa: PLC0415  (pandas loads only for a DataFrame)

        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise RecallCircuitsError(f"every must be a whole number of steps, at least 1, not {every!r}")
        df = self.to_dataframe()
        cols = ["first_step", "last_step", "format", "n", "mean", "max"]
        if df.empty:
            return pd.DataFrame(columns=cols)
        df["window"] = (df["step"] - 1) // every
        df["format"] = df["format"].fillna("all")
        g = df.groupby(["window", "format"], sort=True)["loss"].agg(n="count", mean="mean", max="max").reset_index()
        g["first_step"] = g["window"] * every + 1
        g["last_step"] = (g["window"] + 1) * every
        return g[cols].reset_index(drop=True)


def training_log(run_dir: str | Path) -> TrainingLog:
    """The training loss of the run in ``run_dir``, read from its ``metrics.jsonl`` (finished or still training:
    a line being written is skipped; where a resumed run logged a step twice, the last record wins). A folder
    without the log is a one-line error."""
    f = Path(run_dir) / METRICS_FILE
    if not f.is_file():
        raise RecallCircuitsError(f"{run_dir} has no {METRICS_FILE} (not a fine-tuning run, or not begun)")
    lines = f.read_text().splitlines()
    records: dict[int, dict[str, Any]] = {}
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except ValueError:
            if i == len(lines) - 1:          # the line the run is writing now
                continue
            raise RecallCircuitsError(f"{f}: line {i + 1} is not JSON") from None
        if "step" in r and "loss" in r:
            records[int(r["step"])] = r
    steps = sorted(records)
    return TrainingLog(str(run_dir), steps, [records[s].get("phase") for s in steps],
                       [records[s].get("format") for s in steps], [float(records[s]["loss"]) for s in steps],
                       [None if records[s].get("lr") is None else float(records[s]["lr"]) for s in steps])


def run_logs(runs: Mapping[str, str | Path], n_windows: int) -> tuple[dict[str, TrainingLog], int]:
    """The training logs of those of the named ``runs`` that have one, and the window size (in steps) that cuts
    the longest of them into about ``n_windows`` windows, the same for all so that they compare."""
    logs = {name: training_log(d) for name, d in runs.items() if (Path(d) / METRICS_FILE).is_file()}
    longest = max((lg.step[-1] for lg in logs.values() if lg.step), default=1)
    return logs, max(1, longest // n_windows)


def windows_figure(windows: dict[str, list[dict[str, Any]]], every: int, *, with_max: bool = True) -> Any:
    """Training loss against step from window records (``TrainingLog.windows(every)`` as records, e.g. a run
    summary's): the mean over each window, one line per run and batch format in format order, with ``with_max``
    the window's largest loss after it as a dotted line (a spike shows in it first)."""
    import plotly.graph_objects as go  # noqa: PLC0415  (plotly loads only when a figure is drawn)

    fig = go.Figure()
    for name, rows in windows.items():
        for fmt in sorted({r["format"] for r in rows}):
            d = [r for r in rows if r["format"] == fmt]
            x = [r["last_step"] for r in d]
            fig.add_trace(go.Scatter(x=x, y=[r["mean"] for r in d], mode="lines", name=f"{name}, {fmt} batches"))
            if with_max:
                fig.add_trace(go.Scatter(x=x, y=[r["max"] for r in d], mode="lines", line={"dash": "dot"},
                                         name=f"{name}, {fmt} batches, largest"))
    fig.update_layout(title=f"Training loss, mean over windows of {every} steps", xaxis_title="step",
                      yaxis_title="loss (mean token cross-entropy)", yaxis_type="log", height=380)
    return fig


def loss_figure(logs: dict[str, TrainingLog], every: int = 100) -> Any:
    """Training loss against step for several runs: the mean over windows of ``every`` steps, one line per run and
    batch format, the window's largest loss as a dotted line (a spike shows in it first)."""
    return windows_figure({name: lg.windows(every).to_dict(orient="records") for name, lg in logs.items()}, every)


def curve_figure(curves: dict[str, LearningCurve], measures: tuple[str, ...] = ("qa_id", "qa_ood")) -> Any:
    """QA accuracy against step for several runs (one line per run and measure, 95% intervals as error bars)."""
    import plotly.graph_objects as go  # noqa: PLC0415  (plotly loads only when a figure is drawn)

    fig = go.Figure()
    for name, curve in curves.items():
        df = curve.to_dataframe()
        for m in measures:
            d = df[df["measure"] == m]
            if d.empty:
                continue
            fig.add_trace(go.Scatter(x=d["step"], y=d["acc"], mode="lines+markers", name=f"{name} {m}",
                                     error_y={"type": "data", "symmetric": False, "array": d["high"] - d["acc"],
                                              "arrayminus": d["acc"] - d["low"]}))
    fig.update_layout(title="QA exact match along training (95% intervals over people)", xaxis_title="step",
                      yaxis_title="accuracy", yaxis_range=[0, 1])
    return fig
