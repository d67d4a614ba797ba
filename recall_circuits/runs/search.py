"""The regime search's orchestration (``analyses/regime_search.py`` is its parser): the pairs of the plan
(:mod:`recall_circuits.runs.regime`) not yet done, each trained as two arms side by side, its row written to the
run folder and to the committed record.

    cfg = SearchConfig(out=Path("runs/search"), record=Path("docs/search"), only=("A1",))
    rows = run_search(cfg)          # every finished pair's row, in the plan's order
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recall_circuits.artefacts import write_json
from recall_circuits.data.bios import DataConfig, generate, write_dataset
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.files import MANIFEST_FILE, PAIR_FILE, TABLE_FILE
from recall_circuits.models.registry import resolve_model
from recall_circuits.runs.regime import (
    FIXED,
    PLAN,
    SECOND_SEED,
    Setting,
    arm_options,
    choose,
    data_name,
    in_plan_order,
    load_record,
    pair_row,
    read_pair,
    resolve,
    table_markdown,
    unsettled_by,
)
from recall_circuits.runs.stages.side_by_side import run_side_by_side, run_state
from recall_circuits.training.options import config_from_options
from recall_circuits.training.parallel import device_name

log = logging.getLogger(__name__)
ARMS = ("mixed", "two-stage")


@dataclass(frozen=True)
class SearchConfig:
    out: Path                          # the working directory (data, checkpoints, logs, pair.json files)
    record: Path                       # the committed rows, <id>.json (pairs found there are done)
    only: tuple[str, ...] = ()         # these pairs of the plan (default: every pair not yet done)
    second_seed: bool = False          # repeat the pair the decision rule chose with SECOND_SEED
    model: str | None = None           # another model for both arms (trying the runner on a tiny model)
    progress: bool = False             # progress bars in the arms' logs
    device: str | None = None          # both arms; None: the preset's
    dtype: str | None = None
    checkpoint_every: int | None = None   # where the arms save, not what they train
    snapshot_every: int | None = None

    def arm_extra(self) -> list[str]:
        """The options every arm gets on top of its setting's."""
        return [*(["--device", self.device] if self.device else []), *(["--dtype", self.dtype] if self.dtype else []),
                *(["--checkpoint-every", str(self.checkpoint_every)] if self.checkpoint_every is not None else []),
                *(["--snapshot-every", str(self.snapshot_every)] if self.snapshot_every is not None else [])]


def load_done(out: Path, record: Path) -> dict[str, dict[str, Any]]:
    """Finished pairs: the committed record (``record/<id>.json``) and the run folder (``out/<id>/pair.json``)."""
    done = load_record(record) if record.is_dir() else {}
    for f in out.glob(f"*/{PAIR_FILE}"):
        if f.parent.name not in done:
            done[f.parent.name] = read_pair(f)
    return in_plan_order(done)


def run_arms(setting: Setting, data: Path, pair_dir: Path, progress: bool, model: str | None,
             extra: list[str]) -> dict[str, dict[str, Any] | None]:
    """Both arms of a pair side by side, one torch thread each (an arm whose folder exists resumes from its last
    checkpoint; a finished arm is read back); each arm is a list of ``analyses/finetune.py``'s options."""
    cfgs = {arm: config_from_options([*arm_options(setting, arm), "--data", str(data), "--out", str(pair_dir / arm),
                                      *(["--model", model] if model else []), *extra]) for arm in ARMS}
    for arm, cfg in cfgs.items():
        log.info("%s %s: %s", setting.id, arm, json.dumps(cfg, sort_keys=True))
    resolve_model(cfgs["mixed"]["model"])    # build or convert the model once, before the two arms race to do it
    pair_dir.mkdir(parents=True, exist_ok=True)
    return run_side_by_side(cfgs, logs=pair_dir, threads=1, verbose=progress)


def ensure_data(out: Path, setting: Setting) -> Path:
    """The setting's bioS data under ``out/data``, generated once."""
    path = out / "data" / data_name(setting)
    if not (path / MANIFEST_FILE).is_file():
        write_dataset(generate(DataConfig(n_people=setting.people, seed=setting.seed, fullname=setting.fullname)),
                      path, overwrite=True)
    return path


def started(pair_dir: Path) -> str | None:
    """How far a pair begun in ``pair_dir`` got ("started: mixed 410 / 13000 (resumes from 400), two-stage ..."),
    or None when neither arm has begun."""
    arms = [f"{arm} {state}" for arm in ARMS if (state := run_state(pair_dir / arm))]
    return "started: " + ", ".join(arms) if arms else None


def plan_lines(cfg: SearchConfig) -> list[str]:
    """The plan, a line a pair: its id, done / how far it got / todo, and why it is in the plan."""
    done = load_done(cfg.out, cfg.record)
    return [f"{s.id:4s} {'done' if s.id in done else started(cfg.out / s.id) or 'todo'}  {s.why}" for s in PLAN]


def pending(cfg: SearchConfig, done: dict[str, dict[str, Any]]) -> tuple[list[Setting], str | None]:
    """The pairs to run, in order, and the pair they repeat (``second_seed``); refused in one line, before anything
    is written, where a pair takes its setting from the best pair so far and pairs not in the record could change
    it."""
    todo = [s for s in PLAN if s.id not in done and (not cfg.only or s.id in cfg.only)]
    repeat_of = None
    if cfg.second_seed:
        chosen, _ = choose(done)
        if chosen is None:
            raise RecallCircuitsError("no pair meets the premise yet: nothing to repeat with a second seed")
        repeat_of = chosen["setting"]["id"]
        dtype = cfg.dtype or FIXED["dtype"]       # a repeat at another precision than the search's is its own row
        rid = f"{repeat_of}-seed{SECOND_SEED}" + ("" if dtype == FIXED["dtype"] else f"-{dtype}")
        todo = [] if rid in done else [dataclasses.replace(Setting.from_dict(chosen["setting"]), id=rid,
                                                           seed=SECOND_SEED)]
    for i, raw in enumerate(todo):
        unsettled = unsettled_by(raw, done, [t.id for t in todo[:i]])
        if unsettled:
            raise RecallCircuitsError(
                f"{raw.id} takes its other settings from the best pair so far, and {', '.join(unsettled)} (not in "
                f"the record {cfg.record}) could change them: run them first, or name the record that holds them")
    return todo, repeat_of


def run_search(cfg: SearchConfig) -> dict[str, dict[str, Any]]:
    """Every pending pair: its data, both arms, its row (``out/<id>/pair.json``, ``record/<id>.json``, the table
    ``out/table.md``); returns every finished pair's row."""
    done = load_done(cfg.out, cfg.record)
    todo, repeat_of = pending(cfg, done)
    for raw in todo:
        s = resolve(raw, done)
        t0 = time.time()
        res = run_arms(s, ensure_data(cfg.out, s), cfg.out / s.id, cfg.progress, cfg.model, cfg.arm_extra())
        mixed, stage = res["mixed"], res["two-stage"]
        if mixed is None or stage is None:
            raise RecallCircuitsError(f"{s.id}: an arm did not finish (see its log in {cfg.out / s.id})")
        row = pair_row(s, mixed, stage, dtype=cfg.dtype or FIXED["dtype"], repeat_of=repeat_of)
        row["pair_wall_s"] = time.time() - t0     # this invocation (a resumed pair: since the resume)
        row["hardware"] = device_name(cfg.device)
        write_json(cfg.out / s.id / PAIR_FILE, row, indent=2)
        cfg.record.mkdir(parents=True, exist_ok=True)
        write_json(cfg.record / f"{s.id}.json", row, indent=2)
        done[s.id] = row
        (cfg.out / TABLE_FILE).write_text(table_markdown(done))
    return done
