"""Run the pre-registered regime search (recall_circuits.runs.regime.PLAN; the rule is in docs/results.md).

    python analyses/regime_search.py --out runs/search            # every pair not yet done, in the plan's order
    python analyses/regime_search.py --out runs/search --only A1   # one pair
    python analyses/regime_search.py --out runs/search --list      # the plan and what is done
    python analyses/regime_search.py --table                       # the finished pairs' table (docs/results.md)
    python analyses/regime_search.py --out DIR --only A11 --device cuda --checkpoint-every 0   # on a GPU

Each pair runs its two arms side by side, one torch thread each (two 2-thread jobs on 2 cores slow each other
many times over), with analyses/finetune.py; an interrupted arm resumes from its last checkpoint with the same
command. OUT/<id>/pair.json holds the row (accuracies with 95% intervals over people, the gap, the verdict), copied to
docs/search/<id>.json to be committed (a pair found there is done); OUT/table.md the table so far. Keep OUT
outside the work tree (e.g. ~/recall_circuits_search) when the checkpoints should outlive a fresh checkout. A pair
that takes its settings from the best pair so far (A11, A12: the best among the pairs before it in the plan) runs
only once no unfinished pair before it could change them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

from recall_circuits.artefacts import write_json
from recall_circuits.cli import add_device_args, comma_list, parser, script
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.runs.regime import (
    FIXED,
    PLAN,
    SECOND_SEED,
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

log = logging.getLogger("regime_search")
ROOT = Path(__file__).resolve().parents[1]
ARMS = ("mixed", "two-stage")


def _load_done(out: Path, record: Path) -> dict[str, dict]:
    """Finished pairs: the committed record (``record/<id>.json``) and the run folder (``out/<id>/pair.json``)."""
    done = load_record(record) if record.is_dir() else {}
    for f in out.glob("*/pair.json"):
        if f.parent.name not in done:
            done[f.parent.name] = read_pair(f)
    return in_plan_order(done)


def _run_arms(setting, data: Path, pair_dir: Path, progress: bool, model: str | None,
              extra: list[str]) -> dict[str, dict]:
    """Both arms of a pair side by side, one torch thread each (an arm whose folder exists resumes from its last
    checkpoint; a finished arm is read back); each arm is a list of ``analyses/finetune.py``'s options."""
    from recall_circuits.models.registry import resolve_model  # noqa: PLC0415
    from recall_circuits.runs.stages.side_by_side import run_side_by_side  # noqa: PLC0415
    from recall_circuits.training.options import config_from_options  # noqa: PLC0415

    cfgs = {arm: config_from_options([*arm_options(setting, arm), "--data", str(data), "--out", str(pair_dir / arm),
                                      *(["--model", model] if model else []), *extra]) for arm in ARMS}
    for arm, cfg in cfgs.items():
        log.info("%s %s: %s", setting.id, arm, json.dumps(cfg, sort_keys=True))
    resolve_model(cfgs["mixed"]["model"])    # build or convert the model once, before the two arms race to do it
    pair_dir.mkdir(parents=True, exist_ok=True)
    return run_side_by_side(cfgs, logs=pair_dir, threads=1, verbose=progress)


def _ensure_data(out: Path, setting) -> Path:
    from recall_circuits.data.bios import DataConfig, generate, write_dataset  # noqa: PLC0415

    path = out / "data" / data_name(setting)
    if not (path / "manifest.json").is_file():
        write_dataset(generate(DataConfig(n_people=setting.people, seed=setting.seed, fullname=setting.fullname)),
                      path, overwrite=True)
    return path


def _hardware(device: str | None) -> str:
    """What the arms trained on, for the table: ``cpu`` or the accelerator's name."""
    if not device or device == "cpu":
        return "cpu"
    import torch  # noqa: PLC0415

    return torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else device


def _started(pair_dir: Path) -> str | None:
    """How far a pair begun in ``pair_dir`` got ("started: mixed 410 / 13000 (resumes from 400), two-stage ..."),
    or None when neither arm has begun."""
    from recall_circuits.runs.stages.side_by_side import run_state  # noqa: PLC0415

    arms = [f"{arm} {state}" for arm in ("mixed", "two-stage") if (state := run_state(pair_dir / arm))]
    return "started: " + ", ".join(arms) if arms else None


def _steps(text: str) -> int:
    """A number of optimiser steps, 0 or more (checked before anything is written)."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number of steps, 0 or more, not {text!r}")
    return int(text)


def _plan_id(text: str) -> str:
    if text not in {s.id for s in PLAN}:
        raise ValueError(text)
    return text


def build_parser() -> argparse.ArgumentParser:
    ap = parser(__doc__)
    ap.add_argument("--out", default="runs/search", help="the search's working directory (checkpoints, logs)")
    ap.add_argument("--record", help="where each finished pair's row is kept as <id>.json, to be committed (pairs "
                    "found there are done); default: docs/search, or OUT/record with --model")
    ap.add_argument("--only", type=comma_list(_plan_id, "pair ids of the plan"),
                    help="comma-separated pairs to run, e.g. A1,A3 (default: every pair not yet done)")
    ap.add_argument("--second-seed", action="store_true",
                    help=f"repeat the pair the decision rule chose with seed {SECOND_SEED} (data and training)")
    ap.add_argument("--model", help="another model for both arms (default: the cpu preset's, smollm2-135m); for "
                    "trying the runner on a tiny model")
    ap.add_argument("--list", action="store_true", help="print the plan, what is done, and exit")
    ap.add_argument("--table", action="store_true", help="print the table of the finished pairs (markdown) and exit")
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=False,
                    help="progress bars in the arms' logs")
    add_device_args(ap, device=None, dtype=None, dtypes=("float32", "bfloat16"))   # both arms; default: the preset's
    for name, what in (("checkpoint-every", "resumable checkpoints"), ("snapshot-every", "saved model snapshots")):
        ap.add_argument(f"--{name}", type=_steps, help=f"optimiser steps between the arms' {what} (default: the "
                        "search's; 0: none, e.g. on a machine whose disk does not outlive the run). Where the arms "
                        "save, not what they train: the row is the same")
    return ap


@script(build_parser)
def main(args: argparse.Namespace) -> int:
    out = Path(args.out)
    record = Path(args.record) if args.record else (out / "record" if args.model else ROOT / "docs" / "search")
    done = _load_done(out, record)
    if args.list:
        for s in PLAN:
            state = "done" if s.id in done else _started(out / s.id) or "todo"
            print(f"{s.id:4s} {state}  {s.why}")
        return 0
    if args.table:
        print(table_markdown(done), end="")
        return 0
    todo = [s for s in PLAN if s.id not in done and (not args.only or s.id in args.only)]
    repeat_of = None
    if args.second_seed:
        chosen, _ = choose(done)
        if chosen is None:
            raise RecallCircuitsError("no pair meets the premise yet: nothing to repeat with a second seed")
        from recall_circuits.runs.regime import Setting  # noqa: PLC0415
        repeat_of = chosen["setting"]["id"]
        dtype = args.dtype or FIXED["dtype"]       # a repeat at another precision than the search's is its own row
        rid = f"{repeat_of}-seed{SECOND_SEED}" + ("" if dtype == FIXED["dtype"] else f"-{dtype}")
        todo = [] if rid in done else [dataclasses.replace(Setting.from_dict(chosen["setting"]), id=rid,
                                                           seed=SECOND_SEED)]
    for i, raw in enumerate(todo):     # before anything is written: a pair whose setting is not settled yet
        unsettled = unsettled_by(raw, done, [t.id for t in todo[:i]])
        if unsettled:
            raise RecallCircuitsError(
                f"{raw.id} takes its other settings from the best pair so far, and {', '.join(unsettled)} (not in "
                f"the record {record}) could change them: run them first, or name the record that holds them")
    for raw in todo:
        s = resolve(raw, done)
        t0 = time.time()
        data = _ensure_data(out, s)
        extra = [*(["--device", args.device] if args.device else []), *(["--dtype", args.dtype] if args.dtype else []),
                 *(["--checkpoint-every", str(args.checkpoint_every)] if args.checkpoint_every is not None else []),
                 *(["--snapshot-every", str(args.snapshot_every)] if args.snapshot_every is not None else [])]
        res = _run_arms(s, data, out / s.id, args.progress, args.model, extra)
        row = pair_row(s, res["mixed"], res["two-stage"], dtype=args.dtype or FIXED["dtype"],
                       repeat_of=repeat_of)
        row["pair_wall_s"] = time.time() - t0     # this invocation (a resumed pair: since the resume)
        row["hardware"] = _hardware(args.device)
        tmp = out / s.id / "pair.json.partial"
        tmp.write_text(json.dumps(row, indent=2))
        tmp.rename(out / s.id / "pair.json")
        record.mkdir(parents=True, exist_ok=True)
        write_json(record / f"{s.id}.json", row, indent=2)
        done[s.id] = row
        (out / "table.md").write_text(table_markdown(done))
        log.info("%s: gap %.3f [%.3f, %.3f], premise %s, qualifies %s", s.id, row["gap"]["value"], row["gap"]["low"],
                 row["gap"]["high"], row["premise_ok"], row["qualifies"])
    chosen, reached = choose(done)
    if chosen:
        log.info("decision rule so far: %s (%s)", chosen["setting"]["id"],
                 "reaches the target" if reached else "target not reached")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
