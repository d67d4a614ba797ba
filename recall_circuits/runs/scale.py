"""The pre-registered people-scaling study: does mixed training start to answer questions about OOD people once
there are many people to learn extraction from?

The plan (fixed here and in ``docs/results.md`` before its first run): ``PEOPLE`` = 300, 1,000, 3,000 and 10,000
people (half ID, half OOD; pronoun biographies, data seed 0), every pair trained with one fair setting (``FIXED``:
the regime search's A10 choices, constant rate after a 3% warm-up, tied embedding frozen, QA share 1, on the fast
path: batch 64, bfloat16 autocast, length buckets). The passes and the learning rate are chosen once, from
``GRID``, at ``SELECT_AT`` = 1,000 people by the memorisation premise alone (:func:`rule_state`: the first grid
point, in the grid's order, whose pair answers the trained questions and memorises the biographies); no OOD number
enters the choice. Each pair's record (:func:`scale_row`) has the search's keys (``setting`` with ``people`` and
``model``, ``premise_ok``, ``gap``, …), QA-OOD's chance floor (each OOD question scored against another OOD
person's answer) and QA-OOD above it, each with its 95% bootstrap interval over people, the ``device`` it ran
on, and QA-ID / QA-OOD / floor at about ``CURVE_POINTS`` points along training (on the first ``CURVE_PEOPLE`` ID
and OOD people), so a reader sees whether OOD was still rising. A pair reaches the paper's direction when its
premise holds, the gap's interval is at least ``TARGET_GAP`` and mixed's QA-OOD is above its floor (interval
above 0).

Example::

    from recall_circuits.runs.scale import GRID, PEOPLE, train_options
    train_options(GRID[0])       # the TrainConfig fields a pair of the study trains with, over the cpu preset
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recall_circuits.artefacts import write_json
from recall_circuits.data import pools
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.files import PAIR_FILE
from recall_circuits.runs.pipeline import reproduce
from recall_circuits.runs.regime import TARGET_GAP, Setting, interval_text, pair_row, read_pair
from recall_circuits.runs.summary import ReproductionSummary
from recall_circuits.training.curve import learning_curve
from recall_circuits.training.parallel import device_name

log = logging.getLogger(__name__)

PEOPLE: tuple[int, ...] = (300, 1_000, 3_000, 10_000)
SELECT_AT = 1_000
MODEL = "smollm2-135m"
CURVE_POINTS = 10        # snapshots along each arm's training, evaluated on QA-ID, QA-OOD and the floor
CURVE_PEOPLE = 500       # ... on this many ID and this many OOD people (the first of each split)
# TrainConfig fields every pair of the study shares (over the cpu preset); passes and learning rate come from GRID
FIXED: dict[str, Any] = {"batch_size": 64, "warmup_frac": 0.03, "schedule": "constant", "freeze_embeddings": True,
                         "mix_qa_repeat": 1, "bf16": True, "length_buckets": True, "log_every": 50, "seed": 0,
                         "eval_batch_size": 256}
DATA: dict[str, Any] = {"fullname": False, "seed": 0}     # DataConfig fields besides n_people


@dataclass(frozen=True)
class GridPoint:
    """Passes (``epochs``: mixed's passes over BIO and QA; two-stage's BIO passes and QA passes) and the peak
    learning rate of one candidate setting."""

    id: str
    epochs: int
    lr: float


# in order of cost (passes), then learning rate: the first whose premise holds at SELECT_AT people is the setting
GRID: tuple[GridPoint, ...] = (GridPoint("G1", 20, 1e-3), GridPoint("G2", 20, 2e-3), GridPoint("G3", 40, 1e-3),
                               GridPoint("G4", 40, 2e-3))


def grid_point(gid: str) -> GridPoint:
    for g in GRID:
        if g.id == gid:
            return g
    raise RecallCircuitsError(f"no grid point {gid!r}; the grid is {', '.join(g.id for g in GRID)}")


def train_options(point: GridPoint) -> dict[str, Any]:
    """The ``TrainConfig`` fields of a pair of the study at ``point`` (over the ``cpu`` preset)."""
    return FIXED | {"epochs": point.epochs, "lr": point.lr}


def data_options(people: int) -> dict[str, Any]:
    """The ``DataConfig`` fields of the study's data with ``people`` people."""
    if people < 4:
        raise RecallCircuitsError(f"a pair needs at least 4 people (2 OOD for the chance floor), not {people}")
    return DATA | {"n_people": people}


def run_name(people: int, point: GridPoint) -> str:
    """The folder (and record) name of a pair: ``p1000-G2``."""
    return f"p{people}-{point.id}"


def steps_per_arm(people: int, point: GridPoint, batch_size: int | None = None) -> int:
    """Optimiser steps of each arm (the same for both: every biography and every ID question ``epochs`` times, in
    batches of one format; ``batch_size``: the plan's by default): ``epochs × (⌈biographies / batch⌉ + ⌈ID
    questions / batch⌉)``."""
    batch_size = batch_size or FIXED["batch_size"]

    n_id = people // 2              # the data's split: half the people (rounded down) ID
    n_qa = n_id * len(pools.ATTRIBUTES)
    return point.epochs * (-(-people // batch_size) + -(-n_qa // batch_size))


def rule_state(rows: dict[str, dict[str, Any]], people: int = SELECT_AT) -> tuple[str, GridPoint | None]:
    """Where the pre-registered choice of the setting stands, from the pairs at ``people`` people: ``("chosen",
    point)`` (the first grid point, in ``GRID``'s order, whose pair meets the premise), ``("next", point)`` (the
    next grid point to run: every earlier one failed the premise) or ``("none", None)`` (every grid point failed it:
    the study stops there). No OOD number enters it."""
    for g in GRID:
        row = rows.get(run_name(people, g))
        if row is None:
            return "next", g
        if row["premise_ok"]:
            return "chosen", g
    return "none", None


def reaches(row: dict[str, Any]) -> bool:
    """The paper's direction at this pair: the premise, a gap of at least ``TARGET_GAP``, mixed above its floor."""
    floor = row.get("mixed_above_floor")
    return bool(row["premise_ok"] and row["gap"]["value"] >= TARGET_GAP and floor and floor["low"] > 0)


def curve_points(curve: Any) -> list[dict[str, Any]]:
    """A learning curve's points as the record keeps them: step, phase, and per measure (``qa_id``, ``qa_ood``,
    ``qa_floor``) the exact match with its 95% interval."""
    df = curve.to_dataframe()
    out = []
    for step, rows in df.groupby("step", sort=True):
        point: dict[str, Any] = {"step": int(step), "phase": rows["phase"].iloc[0]}
        for r in rows.itertuples():
            point[r.measure] = {"value": float(r.acc), "low": float(r.low), "high": float(r.high)}
        out.append(point)
    return out


def scale_row(people: int, point: GridPoint, model: str, mixed: dict[str, Any], stage: dict[str, Any], *,
              device: str, dtype: str, curves: dict[str, list[dict[str, Any]]] | None = None,
              times: dict[str, float] | None = None) -> dict[str, Any]:
    """One pair's record: the regime search's row (:func:`~recall_circuits.runs.regime.pair_row`: accuracies and
    gap with intervals, premise, BIO recall, steps, the floor) with ``setting`` naming the grid point, the people
    and the model, plus ``device``, the points ``along`` training of each arm, the stages' wall ``times`` and
    whether the pair ``reaches`` the paper's direction."""
    if "qa_floor_per_person" not in mixed or "qa_floor_per_person" not in stage:
        raise RecallCircuitsError("the study's arms must be evaluated with the chance floor (results.json without "
                                  "qa_floor_per_person: fine-tuned by an older version)")
    s = Setting(run_name(people, point), epochs=point.epochs, schedule=FIXED["schedule"],
                frozen=FIXED["freeze_embeddings"], qa_share=FIXED["mix_qa_repeat"], fullname=DATA["fullname"],
                people=people, seed=FIXED["seed"], why=f"people-scaling study at {people} people")
    row = pair_row(s, mixed, stage, dtype=dtype)
    row["setting"] |= {"model": model, "grid_point": point.id, "lr": point.lr, "batch_size": FIXED["batch_size"]}
    row["device"] = device
    row["along"] = curves or {}
    row["times_s"] = times or {}
    row["reaches"] = reaches(row)
    return row


def best(rows: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The study's pair with the largest gap among those whose premise holds (ties: the larger lower bound)."""
    ok = [r for r in rows.values() if r["premise_ok"] and "grid_point" in r["setting"]]
    return max(ok, key=lambda r: (r["gap"]["value"], r["gap"]["low"]), default=None)


def table_markdown(rows: dict[str, dict[str, Any]]) -> str:
    """The study's records as a markdown table (the curve of gap and floor against the number of people)."""
    head = ("| pair | people | passes | lr | mixed QA-ID | two-stage QA-ID | mixed QA-OOD | two-stage QA-OOD | "
            "chance floor (mixed / two-stage) | gap (mixed − two-stage) | mixed QA-OOD − floor | premise | "
            "reaches | device |\n" + "|---" * 14 + "|\n")
    lines = []
    for name, r in sorted(rows.items(), key=lambda kv: (kv[1]["setting"]["people"], kv[0])):
        s = r["setting"]
        lines.append(f"| {name} | {s['people']:,} | {s['epochs']} | {s.get('lr')} | "
                     f"{interval_text(r['mixed_qa_id'])} | {interval_text(r['stage_qa_id'])} | "
                     f"{interval_text(r['mixed_qa_ood'])} | "
                     f"{interval_text(r['stage_qa_ood'])} | {r['mixed_qa_floor']['value']:.3f} / "
                     f"{r['stage_qa_floor']['value']:.3f} | {interval_text(r['gap'])} | "
                     f"{interval_text(r['mixed_above_floor'])} | {'holds' if r['premise_ok'] else 'fails'} | "
                     f"{'yes' if r.get('reaches') else 'no'} | {r.get('device', '?')} |")
    return head + "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Running the study (analyses/scale_search.py is its command line)


@dataclass(frozen=True)
class StudyConfig:
    """How a run of the study is made: where (``out``: one folder per pair, ``<out>/<pair>``; ``record``: one
    ``<pair>.json`` each, to be committed), on what (``device``, ``dtype``: ``bfloat16`` as planned, or ``float32``;
    ``model``: the plan's, or another to try the runner), and with ``quick`` the tiny preset's analysis sizes (a
    tiny model's trial in seconds). ``select_at``: the people at which the grid is run (the plan's 1,000; another
    number only with another model)."""

    out: str
    record: str
    device: str = "cpu"
    dtype: str = "bfloat16"
    model: str = MODEL
    select_at: int = SELECT_AT
    keep_snapshots: bool = False
    quick: bool = False
    verbose: bool = True

    def __post_init__(self) -> None:
        if self.dtype not in ("bfloat16", "float32"):
            raise RecallCircuitsError(f"dtype must be bfloat16 or float32, not {self.dtype!r}")
        if self.model == MODEL and self.select_at != SELECT_AT:
            raise RecallCircuitsError(f"the plan chooses its setting at {SELECT_AT:,} people (select_at is for "
                                      "trying the runner on another model)")

    def options(self, point: GridPoint, people: int) -> dict[str, Any]:
        """The pair's ``TrainConfig`` fields over the preset: the plan's, this run's precision, and saving (about
        ``CURVE_POINTS`` snapshots; no resumable checkpoints on a machine whose disk does not outlive the run)."""
        steps = steps_per_arm(people, point)
        return train_options(point) | {"bf16": self.dtype == "bfloat16", "checkpoint_every": 0,
                                       "snapshot_every": -(-steps // CURVE_POINTS)}


def load_rows(record: str | Path, out: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The study's finished pairs: ``record/<pair>.json`` and, not yet in the record, ``out/<pair>/pair.json``."""
    rows = {f.stem: read_pair(f) for f in sorted(Path(record).glob("p*-G*.json"))} if Path(record).is_dir() else {}
    if out is not None:
        for f in sorted(Path(out).glob("p*-G*/pair.json")):
            rows.setdefault(f.parent.name, read_pair(f))
    return rows


def plan_lines(rows: dict[str, dict[str, Any]], people: list[int], select_at: int = SELECT_AT) -> list[str]:
    """The study's state, a line each: the setting the rule chose (or why none yet), the grid, and per number of
    people what is done and how many steps each grid point's arms take."""
    state, point = rule_state(rows, select_at)
    lines = [f"setting (chosen at {select_at:,} people): {state} {point.id if point else ''}".rstrip()]
    lines += [f"  {g.id}: {g.epochs} passes, lr {g.lr:g}" for g in GRID]
    for n in sorted(set(PEOPLE) | set(people)):
        done = [name for name in rows if name.startswith(f"p{n}-")]
        steps = {g.id: steps_per_arm(n, g) for g in GRID}
        lines.append(f"p{n}: {'done ' + ', '.join(done) if done else 'todo'}  (steps per arm by grid point: {steps})")
    return lines


def plan_order(people: list[int], select_at: int = SELECT_AT) -> list[int]:
    """The people to run, the grid's (``select_at``) first: the setting is chosen there before any other pair."""
    bad = [n for n in people if n < 4]
    if bad:
        raise RecallCircuitsError(f"a pair needs at least 4 people, not {bad[0]}")
    return sorted(set(people), key=lambda n: (n != select_at, n))


def _reproduce(cfg: StudyConfig, people: int, point: GridPoint, *, analyses: bool) -> ReproductionSummary:
    """The reproduction of one pair in ``out/<pair>``: fine-tuning only, or (``analyses``) the mechanism analyses
    and report too, reusing the trained recipes (the same call, so the same identity)."""
    return reproduce(Path(cfg.out) / run_name(people, point), quick=cfg.quick,
                     model=None if cfg.model == MODEL else cfg.model, verbose=cfg.verbose, device=cfg.device,
                     side_by_side=True, train_options=cfg.options(point, people), data_options=data_options(people),
                     analyses=analyses)


def _pair(cfg: StudyConfig, people: int, point: GridPoint) -> dict[str, Any]:
    """Fine-tune one pair (both recipes at once, each in its own process), evaluate it along training and at the
    end, and write its record (``out/<pair>/pair.json`` and ``record/<pair>.json``)."""
    name = run_name(people, point)
    folder = Path(cfg.out) / name
    log.info("%s: %d people, %d passes, lr %g, %d steps per arm", name, people, point.epochs, point.lr,
             steps_per_arm(people, point))
    t0 = time.time()
    runs = _reproduce(cfg, people, point, analyses=False)["runs"]
    t1 = time.time()
    curves = {}
    for arm in ("mixed", "two-stage"):
        c = learning_curve(folder / arm, batch_size=FIXED["eval_batch_size"], device=cfg.device,
                           cache=folder / f"curve-{arm}", max_people=CURVE_PEOPLE, verbose=cfg.verbose)
        curves[arm] = curve_points(c)
        if not cfg.keep_snapshots and (folder / arm / "snapshots").is_dir():
            shutil.rmtree(folder / arm / "snapshots")       # the curve keeps their numbers; the disk is finite
    times = {"fine-tuning and evaluation": t1 - t0, "learning curves": time.time() - t1}
    row = scale_row(people, point, cfg.model, runs["mixed"], runs["two-stage"], device=device_name(cfg.device),
                    dtype=cfg.dtype, curves=curves, times=times)
    write_json(folder / PAIR_FILE, row, indent=2)
    Path(cfg.record).mkdir(parents=True, exist_ok=True)
    write_json(Path(cfg.record) / f"{name}.json", row, indent=2)
    log.info("%s: premise %s, gap %s, mixed above its floor %s (%.0f s)", name,
             "holds" if row["premise_ok"] else "fails", interval_text(row["gap"]),
             interval_text(row["mixed_above_floor"]), time.time() - t0)
    return row


def run_study(cfg: StudyConfig, people: list[int]) -> dict[str, dict[str, Any]]:
    """Run every pair of ``people`` not yet in the record, the grid's people first: at ``select_at`` the grid
    points in order until one meets the premise (the study's setting); every other number of people at that
    setting. An unfinished pair resumes with the same call. Returns the records of every finished pair."""
    rows = load_rows(cfg.record, cfg.out)
    order = plan_order(people, cfg.select_at)
    for n in order:
        while True:
            state, point = rule_state(rows, cfg.select_at)
            if state == "none":
                raise RecallCircuitsError(f"no grid point meets the premise at {cfg.select_at:,} people: by the "
                                          "plan the study stops here (its records say by how much)")
            if state != "chosen" and n != cfg.select_at:
                raise RecallCircuitsError(f"the setting is chosen at {cfg.select_at:,} people first: run those "
                                          "pairs (include them in the people to run)")
            assert point is not None
            if run_name(n, point) not in rows:
                rows[run_name(n, point)] = _pair(cfg, n, point)
            if state == "chosen" or n != cfg.select_at:
                break
    return rows


def run_analyses(cfg: StudyConfig, pair: str | None = None) -> ReproductionSummary:
    """The mechanism analyses (gradient trace and restore ablation, grafting, patching, head curves, attention,
    consistency), the verdicts and the report of one trained pair (default: the study's :func:`best`), in its own
    folder (``summary.json``, ``report.html``); the pair must have been trained here (its models are in ``out``)."""
    rows = load_rows(cfg.record, cfg.out)
    row = rows.get(pair) if pair else best(rows)
    if row is None:
        raise RecallCircuitsError(f"no pair {pair!r} in the record" if pair else
                                  "no pair of the study meets the premise yet: nothing to analyse")
    name = row["setting"]["id"]
    folder = Path(cfg.out) / name
    if not (folder / "mixed" / "model").is_dir() or not (folder / "two-stage" / "model").is_dir():
        raise RecallCircuitsError(f"{folder} does not hold {name}'s trained models (they stay where they were "
                                  "trained): run the pair there first")
    log.info("%s: the mechanism analyses", name)
    return _reproduce(cfg, row["setting"]["people"], grid_point(row["setting"]["grid_point"]), analyses=True)
