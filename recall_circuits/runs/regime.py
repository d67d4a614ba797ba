"""The pre-registered search for a CPU regime where mixed training generalises to OOD people and two-stage does not.

The plan (``PLAN``), the fairness rule and the decision rule are fixed here and in ``docs/results.md`` before the
search's first result. Every setting is one *fair pair*: the two recipes share every setting (model, data, batch,
optimiser, learning rate, schedule shape, warm-up fraction, frozen or trained embedding, seed, number of BIO
passes), and two-stage's QA phase makes as many QA updates as mixed makes (``qa_share`` = r: mixed sees each ID
question r times per epoch, two-stage's QA phase runs r·E epochs).

Decision rule (:func:`qualifies`, :func:`choose`): a pair qualifies when both recipes answer the trained questions
(QA-ID exact match ≥ 0.9 each), both memorise the biographies (BIO recall over all people ≥ 0.9 for mixed and for
two-stage after its BIO phase), and mixed − two-stage on QA-OOD exact match ≥ 0.25. Among qualifying pairs the
default is the cheapest (fewest optimiser steps for the pair; then the larger lower bound of the gap's interval).
If none qualifies, the default is the pair with the largest gap among those meeting the ID and memorisation
conditions, and the results say the target was not reached.

Example::

    from recall_circuits.runs.regime import PLAN, resolve
    [s.id for s in PLAN]            # the order in which the pairs are run
    resolve(PLAN[0], done={})       # the finetune.py options of each arm
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recall_circuits.errors import RecallCircuitsError
from recall_circuits.training.evaluation import flat_keys, floor_interval
from recall_circuits.training.intervals import accuracy_interval, gap_interval

TARGET_GAP = 0.25
MIN_QA_ID = 0.9
MIN_BIO = 0.9


@dataclass(frozen=True)
class Setting:
    """One fair pair of the search. ``from_best``: the other fields marked here replace those of the best pair
    found so far (largest gap lower bound among pairs meeting the ID and memorisation conditions)."""

    id: str
    epochs: int = 20                 # E: BIO passes, and QA passes per unit of qa_share
    schedule: str = "constant"       # after a 3% warm-up, per phase
    frozen: bool = True              # tied input embedding / unembedding kept at its pretrained value
    qa_share: int = 1                # r
    fullname: bool = False           # biographies name the person in every sentence (instead of pronouns)
    people: int = 100                # half ID, half OOD
    seed: int = 0                    # data and training seed
    from_best: tuple[str, ...] = ()  # fields kept from this Setting; all others come from the best pair so far
    why: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Setting:
        """A setting from its JSON form (a row's ``setting``: lists where the dataclass has tuples)."""
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**fields)


PLAN: tuple[Setting, ...] = (
    Setting("A1", why="constant rate after warm-up and twice the passes: ID is learned well before the end"),
    Setting("A2", qa_share=2, why="a larger QA share (Physics of LMs 3.1 mixes with QA at 0.8 of the tokens)"),
    Setting("A3", epochs=30, why="more passes"),
    Setting("A4", fullname=True, why="the name in every sentence of the biography"),
    Setting("A5", frozen=False, why="the embedding trained, as in the paper's full fine-tuning"),
    Setting("A6", schedule="linear", why="the decaying schedule at 20 passes (schedule alone)"),
    Setting("A7", epochs=10, why="fewer passes: the cheaper setting, if 20 already qualifies"),
    Setting("A8", people=50, why="fewer people (cheaper, fewer ID questions to learn extraction from)"),
    Setting("A9", people=200, why="more people (more ID questions to learn extraction from)"),
    Setting("A10", epochs=40, why="many more passes"),
    Setting("A11", qa_share=4, from_best=("qa_share",), why="the best pair so far with a QA share of 4"),
    Setting("A12", fullname=True, qa_share=2, from_best=("fullname", "qa_share"),
            why="the best pair so far with full names and a QA share of 2"),
)
SECOND_SEED = 1   # the chosen setting is repeated with this data and training seed
# the pair the ``cpu`` preset was set from by the decision rule; None while the preset is the one that preceded the
# search (the search has not chosen yet)
PRESET_PAIR: str | None = "A10"

# the search trains in float32 whatever the ``cpu`` preset's precision (``regime_search.py --dtype`` overrides)
FIXED: dict[str, Any] = {"preset": "cpu", "lr": 5e-4, "batch_size": 4, "warmup_frac": 0.03, "checkpoint_every": 200,
         "dtype": "float32"}


def best_pair(done: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The completed pair meeting the ID and memorisation conditions with the largest gap lower bound (ties: the
    larger gap, then the earlier pair in the plan)."""
    ok = [p for p in planned_rows(done).values() if p["premise_ok"]]
    return max(ok, key=lambda p: (p["gap"]["low"], p["gap"]["value"]), default=None)


def planned_rows(done: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The rows the decision rule compares, in the plan's order: a repeat of a pair (a second seed, whose row
    names the pair in ``repeat_of``) informs, it does not compete."""
    return {k: v for k, v in in_plan_order(done).items() if not v.get("repeat_of")}


def resolve(setting: Setting, done: dict[str, dict[str, Any]]) -> Setting:
    """The concrete setting: a ``from_best`` setting takes every field it does not name from the best pair so far,
    among the finished pairs before it in the plan (from ``A1``'s defaults when none meets the conditions yet). A
    pair after it in the plan that happened to finish first (A12 before A11) does not count."""
    if not setting.from_best:
        return setting
    best = best_pair(_before(setting, done))
    return _on_base(setting, Setting.from_dict(best["setting"]) if best else Setting(setting.id))


def _before(setting: Setting, done: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The rows of ``done`` for pairs before ``setting`` in the plan (all of them when it is not in the plan)."""
    ids = [p.id for p in PLAN]
    if setting.id not in ids:
        return done
    earlier = set(ids[:ids.index(setting.id)])
    return {k: v for k, v in done.items() if v["setting"]["id"] in earlier}


def _on_base(setting: Setting, base: Setting) -> Setting:
    """``setting`` (a ``from_best`` one) with every field it does not name taken from ``base``."""
    keep = {f: getattr(setting, f) for f in setting.from_best}
    return dataclasses.replace(base, id=setting.id, from_best=(), why=setting.why, **keep)


def unsettled_by(setting: Setting, done: dict[str, dict[str, Any]], running_first: Sequence[str] = ()) -> list[str]:
    """The pairs before ``setting`` in the plan, neither finished (in ``done``) nor run first in this invocation
    (``running_first``), whose outcome could change its concrete setting: for a ``from_best`` pair, each such pair
    that, were it the best, would give it other fields than the best so far does. Empty: it may run now (a pair
    whose setting no pending pair can change, e.g. A12 before A11, which differ only in fields A12 names itself)."""
    if not setting.from_best:
        return []
    ids = [p.id for p in PLAN]
    before = PLAN[:ids.index(setting.id)] if setting.id in ids else PLAN
    here = resolve(setting, done)
    return [p.id for p in before if p.id not in done and p.id not in running_first
            and _on_base(setting, resolve(p, done)) != here]


def data_name(s: Setting) -> str:
    return f"p{s.people}-{'full' if s.fullname else 'pron'}-s{s.seed}"


def arm_options(s: Setting, strategy: str) -> list[str]:
    """``analyses/finetune.py`` options of one arm (the data and output directories aside)."""
    if s.schedule not in ("linear", "cosine", "constant") or s.epochs < 1 or s.qa_share < 1:
        raise RecallCircuitsError(f"invalid setting {s}")
    opts = ["--strategy", strategy, "--preset", FIXED["preset"], "--lr", str(FIXED["lr"]),
            "--batch-size", str(FIXED["batch_size"]), "--warmup-frac", str(FIXED["warmup_frac"]),
            "--checkpoint-every", str(FIXED["checkpoint_every"]), "--dtype", FIXED["dtype"],
            "--schedule", s.schedule, "--seed", str(s.seed),
            "--freeze-embeddings" if s.frozen else "--no-freeze-embeddings"]
    if strategy == "mixed":
        return [*opts, "--epochs", str(s.epochs), "--mix-qa-repeat", str(s.qa_share)]
    return [*opts, "--bio-epochs", str(s.epochs), "--epochs", str(s.epochs * s.qa_share)]


def premise_ok(mixed: dict[str, Any], stage: dict[str, Any]) -> bool:
    """Both answer the trained questions, both memorise the biographies (two-stage: after its BIO phase)."""
    def bio(r: dict[str, Any]) -> float:
        return min(r["bio_recall_id"], r["bio_recall_ood"])
    return (mixed["qa_id_acc"] >= MIN_QA_ID and stage["qa_id_acc"] >= MIN_QA_ID
            and bio(mixed) >= MIN_BIO and bio(stage["after_bio"]) >= MIN_BIO)


def pair_row(setting: Setting, mixed: dict[str, Any], stage: dict[str, Any],
             dtype: str = FIXED["dtype"], repeat_of: str | None = None) -> dict[str, Any]:
    """One row of the search table: accuracies with intervals over people, the gap, the verdict. ``dtype``: the
    arms' training compute precision (the search's is float32; bfloat16 is the ``cpu`` preset's autocast);
    ``repeat_of``: the pair this row repeats with another seed (the decision rule does not compare it)."""
    acc = {f"{arm}_{k}": accuracy_interval(r[f"{k}_per_person"]).to_dict()
           for arm, r in (("mixed", mixed), ("stage", stage)) for k in ("qa_id", "qa_ood")}
    gap = gap_interval(mixed["qa_ood_per_person"], stage["qa_ood_per_person"]).to_dict()
    ok = premise_ok(mixed, stage)
    acc |= floor_fields(mixed, stage)
    return {
        "setting": dataclasses.asdict(setting),
        "dtype": dtype,
        "repeat_of": repeat_of,
        **acc,
        "gap": gap,
        "mixed_bio": [mixed["bio_recall_id"], mixed["bio_recall_ood"]],
        "stage_after_bio_bio": [stage["after_bio"]["bio_recall_id"], stage["after_bio"]["bio_recall_ood"]],
        "stage_bio": [stage["bio_recall_id"], stage["bio_recall_ood"]],
        "steps": int(mixed["steps"]) + int(stage["steps"]),
        "wall_s": {"mixed": mixed["wall_s"], "two-stage": stage["wall_s"]},          # the last invocation
        "train_wall_s": {"mixed": mixed.get("train_wall_s"), "two-stage": stage.get("train_wall_s")},  # all of it
        "torch_threads": {"mixed": mixed.get("torch_threads"), "two-stage": stage.get("torch_threads")},
        "qa_ood_detail": _ood_detail(mixed, stage),
        "premise_ok": ok,
        "qualifies": ok and gap["value"] >= TARGET_GAP,
    }


def floor_fields(mixed: dict[str, Any], stage: dict[str, Any]) -> dict[str, Any]:
    """Each arm's QA-OOD chance floor (``<arm>_qa_floor``) and QA-OOD minus it on the same people
    (``<arm>_above_floor``), with 95% intervals, where both arms were evaluated with the floor (else nothing)."""
    if not all(r.get("qa_floor_per_person") for r in (mixed, stage)):
        return {}
    out: dict[str, Any] = {}
    for arm, r in (("mixed", mixed), ("stage", stage)):
        out[f"{arm}_qa_floor"] = accuracy_interval(r["qa_floor_per_person"]).to_dict()
        out[f"{arm}_above_floor"] = floor_interval(r)
    return out


def _ood_detail(mixed: dict[str, Any], stage: dict[str, Any]) -> dict[str, Any]:
    """Descriptive only (no rule uses it): each arm's QA-OOD first-token accuracy and exact match per attribute,
    where its ``results.json`` has them."""
    _, first, prefix = flat_keys("qa_ood")
    detail = {arm: {"first_token": r.get(first),
                    "per_attribute": {a: v["acc"] for a, v in r.get(f"{prefix}_per_attribute", {}).items()}}
              for arm, r in (("mixed", mixed), ("two-stage", stage))}
    for arm, r in (("mixed", mixed), ("two-stage", stage)):
        if r.get("qa_floor_per_attribute"):
            detail[arm]["floor_per_attribute"] = {a: v["acc"] for a, v in r["qa_floor_per_attribute"].items()}
    return detail


def choose(done: dict[str, dict[str, Any]]) -> tuple[dict[str, Any] | None, bool]:
    """The default by the decision rule among the plan's pairs (a repeat does not compete): (pair, reached the
    target). None when no pair meets the premise."""
    done = planned_rows(done)
    good = [p for p in done.values() if p["qualifies"]]
    if good:
        return min(good, key=lambda p: (p["steps"], -p["gap"]["low"])), True
    ok = [p for p in done.values() if p["premise_ok"]]
    return (max(ok, key=lambda p: p["gap"]["value"]), False) if ok else (None, False)


def in_plan_order(done: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``done`` with the plan's ids in the plan's order, other ids (a second seed) after."""
    order = {s.id: i for i, s in enumerate(PLAN)}
    return dict(sorted(done.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def read_pair(f: Path) -> dict[str, Any]:
    """One finished pair's row; a file that is not JSON is a one-line error."""
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RecallCircuitsError(f"{f} is not valid JSON ({exc.msg}); remove it to redo the pair") from exc


def load_record(folder: str | Path) -> dict[str, dict[str, Any]]:
    """The finished pairs kept in ``folder`` as ``<id>.json`` (``analyses/regime_search.py`` writes them; the
    repository's record is ``docs/search``), in the plan's order, other ids (a second seed) after."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RecallCircuitsError(f"the search record {folder} is not a folder")
    return in_plan_order({f.stem: read_pair(f) for f in folder.glob("*.json")})


def search_state(done: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Where the search stands, as JSON data for a summary or a report: the plan's ids, the finished rows, the
    thresholds, the pair the decision rule picks so far and whether it reaches the target."""
    chosen, reached = choose(done)
    return {"planned": [s.id for s in PLAN], "rows": done, "target_gap": TARGET_GAP, "min_qa_id": MIN_QA_ID,
            "min_bio": MIN_BIO, "chosen": chosen["setting"]["id"] if chosen else None, "reached": reached,
            "preset_pair": PRESET_PAIR}


def table_markdown(done: dict[str, dict[str, Any]]) -> str:
    """The finished pairs as the markdown table of ``docs/results.md``."""
    head = ("| id | E | schedule | frozen | QA share | bios | people | seed | mixed QA-ID | two-stage QA-ID | "
            "mixed QA-OOD | two-stage QA-OOD | gap (mixed − two-stage) | "
            "QA-OOD − chance floor (mixed / two-stage) | "
            "BIO mixed (ID/OOD) | BIO two-stage after BIO (ID/OOD) | steps | precision | arms' training time (min) | "
            "premise | qualifies |\n" + "|---" * 21 + "|\n")
    def hw(p: dict[str, Any]) -> str:      # rows without "hardware" trained on this project's 2-core CPU
        return "" if p.get("hardware", "cpu") == "cpu" else f" on {p['hardware']}"

    rows = []
    for pid, p in done.items():
        s = p["setting"]
        # training time over every resume where recorded, else the last invocation's
        wall = {a: (p.get("train_wall_s") or {}).get(a) or p["wall_s"][a] for a in ("mixed", "two-stage")}
        rows.append(f"| {pid} | {s['epochs']} | {s['schedule']} | {'yes' if s['frozen'] else 'no'} | "
                    f"{s['qa_share']} | {'full name' if s['fullname'] else 'pronoun'} | {s['people']} | {s['seed']} | "
                    f"{interval_text(p['mixed_qa_id'])} | {interval_text(p['stage_qa_id'])} | "
                    f"{interval_text(p['mixed_qa_ood'])} | {interval_text(p['stage_qa_ood'])} | "
                    f"{interval_text(p['gap'])} | {floor_text(p)} | "
                    f"{p['mixed_bio'][0]:.2f} / {p['mixed_bio'][1]:.2f} | "
                    f"{p['stage_after_bio_bio'][0]:.2f} / {p['stage_after_bio_bio'][1]:.2f} | {p['steps']} | "
                    f"{p.get('dtype', 'float32')}{hw(p)} | "
                    f"{wall['mixed'] / 60:.0f} / {wall['two-stage'] / 60:.0f} | "
                    f"{'holds' if p['premise_ok'] else 'fails'} | {'yes' if p['qualifies'] else 'no'} |")
    return head + "\n".join(rows) + "\n"


def floor_text(p: dict[str, Any]) -> str:
    """A row's QA-OOD above its chance floor for both arms (``–`` for a row measured before the floor existed)."""
    if "mixed_above_floor" not in p:
        return "–"
    return f"{interval_text(p['mixed_above_floor'])} / {interval_text(p['stage_above_floor'])}"


def interval_text(d: dict[str, float]) -> str:
    """``0.057 [0.030, 0.083]``: a value with its 95% interval."""
    return f"{d['value']:.3f} [{d['low']:.3f}, {d['high']:.3f}]"
