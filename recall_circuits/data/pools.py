"""Value pools and templates of the bioS-style data, read from plain files a user can edit.

The project's pools live in ``data/pools/`` (see ``data/README.md``): one value per line for names, cities,
universities, majors and months, ``companies.tsv`` (a company and the city it is in), ``bio_templates.json`` (per
attribute, the BIO sentences) and ``qa_templates.json`` (the questions, the answer prefix and the pronouns).
:func:`load_pools` reads a directory of such files and checks them; ``DataConfig(pools=DIR)`` generates from your own.

Names are syllable compositions (large, deterministic, free of real people); a company's city is fixed by the
company. Template syntax: ``{S}`` the subject (full name or pronoun), ``{P}`` its possessive, ``{V}`` the value,
``{N}`` the full name in a question, ``[...]`` the relation words; in a BIO template the value comes after the
relation, so the position before it predicts it.

Example::

    from recall_circuits.data.pools import load_pools
    pools = load_pools()                         # the shipped pools (data/pools in a checkout)
    len(pools.first_names), pools.company_city["Northwind Systems"]
"""

from __future__ import annotations

import csv
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recall_circuits.errors import RecallCircuitsError

GENERATOR_VERSION = "1"
ATTRIBUTES = ("birth_date", "birth_city", "university", "major", "company", "company_city")
# the project's data/pools in a checkout; the same files packaged as recall_circuits/pooldata in an installed wheel
_CHECKOUT_DIR = Path(__file__).resolve().parents[2] / "data" / "pools"
DEFAULT_DIR = _CHECKOUT_DIR if _CHECKOUT_DIR.is_dir() else Path(__file__).resolve().parents[1] / "pooldata"
LISTS = ("first_names", "middle_names", "last_names", "cities", "universities", "majors", "months")
MIN_TEMPLATES = 1


@dataclass(frozen=True)
class Pools:
    """The generator's pools (tuples in file order: the order decides what a seed draws)."""

    first_names: tuple[str, ...]
    middle_names: tuple[str, ...]
    last_names: tuple[str, ...]
    cities: tuple[str, ...]
    universities: tuple[str, ...]
    majors: tuple[str, ...]
    months: tuple[str, ...]
    company_city: dict[str, str]
    bio_templates: dict[str, tuple[str, ...]]
    qa_templates: dict[str, str]
    answer_prefix: str
    pronouns: dict[str, tuple[str, str]]
    directory: str

    @property
    def companies(self) -> tuple[str, ...]:
        return tuple(self.company_city)

    def words(self) -> list[str]:
        """Every text the generator can emit a piece of (names, values, templates, pronouns)."""
        return [*self.first_names, *self.middle_names, *self.last_names, *self.cities, *self.universities,
                *self.majors, *self.companies, *self.months, *(t for ts in self.bio_templates.values() for t in ts),
                *self.qa_templates.values(), *(w for pair in self.pronouns.values() for w in pair), self.answer_prefix]


def _lines(path: Path) -> tuple[str, ...]:
    values = tuple(ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip())
    if not values:
        raise RecallCircuitsError(f"{path}: no values")
    dup = sorted({v for v in values if values.count(v) > 1})
    if dup:
        raise RecallCircuitsError(f"{path}: repeated values {dup[:3]}")
    return values


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RecallCircuitsError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from exc


def _check_template(path: Path, where: str, template: str, slots: set[str], value_last: bool) -> None:
    used = set(re.findall(r"\{([A-Z])\}", template))
    if not used <= slots or not re.search(r"\[[^\]]+\]", template):
        raise RecallCircuitsError(f"{path}: {where}: {template!r} must mark its relation words with [...] and use "
                                  f"only {sorted('{' + s + '}' for s in slots)}")
    if value_last and ("{V}" not in template or template.index("{V}") < template.index("]")):
        raise RecallCircuitsError(f"{path}: {where}: {template!r} must hold {{V}} after the relation words")


def load_pools(directory: str | None = None) -> Pools:
    """Read and check the pools in ``directory`` (default: the project's ``data/pools``); a one-line error names
    the file and what is wrong. Read again whenever a file there changes."""
    d = Path(directory) if directory is not None else DEFAULT_DIR
    stamp = tuple((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in sorted(d.glob("*"))) if d.is_dir() else ()
    return _load(str(d), stamp)


@functools.lru_cache(maxsize=8)
def _load(directory: str, stamp: tuple[Any, ...]) -> Pools:
    d = Path(directory)
    missing = [f for f in (*(f"{n}.txt" for n in LISTS), "companies.tsv", "bio_templates.json", "qa_templates.json")
               if not (d / f).is_file()]
    if missing:
        raise RecallCircuitsError(f"{d} is not a pools directory: missing {', '.join(missing)}")
    lists = {n: _lines(d / f"{n}.txt") for n in LISTS}
    if len(lists["months"]) != 12:
        raise RecallCircuitsError(f"{d / 'months.txt'}: 12 months expected, found {len(lists['months'])}")
    with open(d / "companies.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    if not rows or rows[0] != ["company", "city"] or len(rows) < 2 or any(len(r) != 2 or not all(r) for r in rows[1:]):
        raise RecallCircuitsError(f"{d / 'companies.tsv'}: expected a 'company<TAB>city' header and one company "
                                  "and its city per line")
    company_city = {c: city for c, city in rows[1:]}
    if len(company_city) != len(rows) - 1:
        raise RecallCircuitsError(f"{d / 'companies.tsv'}: a company is listed twice")
    bio = _json(d / "bio_templates.json")
    if not isinstance(bio, dict) or set(bio) != set(ATTRIBUTES) or not all(
            isinstance(ts, list) and len(ts) >= MIN_TEMPLATES and all(isinstance(t, str) for t in ts)
            for ts in bio.values()):
        raise RecallCircuitsError(f"{d / 'bio_templates.json'}: expected a list of templates for each of "
                                  f"{list(ATTRIBUTES)}")
    for attr, ts in bio.items():
        for t in ts:
            _check_template(d / "bio_templates.json", attr, t, {"S", "P", "V"}, value_last=True)
    qa = _json(d / "qa_templates.json")
    questions = qa.get("questions") if isinstance(qa, dict) else None
    pronouns = qa.get("pronouns") if isinstance(qa, dict) else None
    if (not isinstance(questions, dict) or set(questions) != set(ATTRIBUTES) or not isinstance(qa.get("answer_prefix"), str)
            or not isinstance(pronouns, dict) or set(pronouns) != {"male", "female"}
            or not all(isinstance(p, list) and len(p) == 2 for p in pronouns.values())):
        raise RecallCircuitsError(f"{d / 'qa_templates.json'}: expected 'questions' (one per attribute of "
                                  f"{list(ATTRIBUTES)}), 'answer_prefix' and 'pronouns' (male and female: "
                                  "[subject, possessive])")
    for attr, t in questions.items():
        _check_template(d / "qa_templates.json", attr, t, {"N"}, value_last=False)
        if "{N}" not in t:
            raise RecallCircuitsError(f"{d / 'qa_templates.json'}: {attr}: {t!r} must name the person with {{N}}")
    return Pools(**lists, company_city=company_city, bio_templates={a: tuple(bio[a]) for a in ATTRIBUTES},
                 qa_templates={a: questions[a] for a in ATTRIBUTES}, answer_prefix=qa["answer_prefix"],
                 pronouns={k: (v[0], v[1]) for k, v in pronouns.items()}, directory=str(d))
