"""bioS-style synthetic biographies (BIO) and question–answer pairs (QA) with an ID/OOD split of people.

Method (arXiv 2505.16178 §2, after Physics of Language Models 3.1): N people with unique full names and six
independently drawn attributes; one BIO text per person (more with ``multi``), six QA pairs per person. People are
split 50/50: QA of the ``id`` half is trained, QA of the ``ood`` half is only evaluated; BIO of all is trained.

Every example carries character spans for its roles — ``subject`` (the name or pronoun), ``relation`` (the template
words naming the attribute) and ``value`` (the answer) — and :func:`tokenize_example` turns them into token spans
for any fast tokenizer.

Example::

    ds = rc.generate(rc.DataConfig(n_people=100, seed=0))
    rc.write_dataset(ds, "data/generated/p100")
    ds = rc.load_dataset("data/generated/p100")
    ds.qa(split="ood")[0]["text"]   # 'What is the birth date of ...?\\nAnswer: October 2, 1996'
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from recall_circuits.files import BIO_FILE, MANIFEST_FILE, PEOPLE_FILE, QA_FILE
from recall_circuits.data import pools
from recall_circuits.data.pools import load_pools
from recall_circuits import checks
from recall_circuits.errors import RecallCircuitsError
import hashlib
from recall_circuits.artefacts import read_json
from recall_circuits.hints import Tokenizer

Split = Literal["id", "ood"]


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """What to generate. ``multi``: BIO texts per person; ``permute``: shuffle sentence order; ``fullname``: the
    name instead of a pronoun in every sentence; ``attributes``: which of the six attributes to use; ``pools``: a
    directory of value pools and templates (:mod:`recall_circuits.data.pools`; default: the project's ``data/pools``)."""

    n_people: int = 100
    seed: int = 0
    multi: int = 1
    permute: bool = False
    fullname: bool = False
    attributes: tuple[str, ...] = pools.ATTRIBUTES
    n_templates: int = 10
    pools: str | None = None

    def __post_init__(self) -> None:
        P = load_pools(self.pools)
        if self.n_people < 2:
            raise RecallCircuitsError(f"--people must be at least 2 (one ID and one OOD person), got {self.n_people}")
        max_people = len(P.first_names) * len(P.middle_names) * len(P.last_names)
        if self.n_people > max_people:
            raise RecallCircuitsError(f"at most {max_people} unique names exist, asked for {self.n_people}")
        if self.multi < 1:
            raise RecallCircuitsError(f"multi must be >= 1, got {self.multi}")
        bad = [a for a in self.attributes if a not in pools.ATTRIBUTES]
        if bad or not self.attributes:
            raise RecallCircuitsError(f"unknown attributes {bad}; choose from {list(pools.ATTRIBUTES)}")
        most = min(len(t) for t in P.bio_templates.values())
        if not 1 <= self.n_templates <= most:
            raise RecallCircuitsError(f"n_templates must be in 1..{most}, got {self.n_templates}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["attributes"] = list(self.attributes)
        if self.pools is None:      # the project's pools: manifests stay as they were before pools were files
            del d["pools"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataConfig:
        d = dict(d)
        d["attributes"] = tuple(d.get("attributes", pools.ATTRIBUTES))
        return cls(**d)


@dataclass
class Dataset:
    """People, BIO and QA examples (plain dicts, as in the JSONL files)."""

    config: DataConfig
    people: list[dict[str, Any]]
    bio_examples: list[dict[str, Any]]
    qa_examples: list[dict[str, Any]]
    manifest: dict[str, Any] = field(default_factory=dict)

    def bio(self, split: Split | None = None) -> list[dict[str, Any]]:
        checks.split(split)
        return [e for e in self.bio_examples if split is None or e["split"] == split]

    def qa(self, split: Split | None = None) -> list[dict[str, Any]]:
        checks.split(split)
        return [e for e in self.qa_examples if split is None or e["split"] == split]

    def person_ids(self, split: Split | str | None = None) -> list[int]:
        checks.split(split)
        return [p["id"] for p in self.people if split is None or p["split"] == split]


# ---------------------------------------------------------------------------------------------------------------
# Generation


def _fill(template: str, slots: dict[str, str]) -> tuple[str, dict[str, list[list[int]]]]:
    """Fill ``{X}`` slots and strip ``[...]`` relation markers; return the text and role spans (char offsets)."""
    out = ""
    spans: dict[str, list[list[int]]] = {"subject": [], "relation": [], "value": []}
    role_of = {"S": "subject", "P": "subject", "N": "subject", "V": "value"}
    for tok in re.split(r"(\{[A-Z]\}|\[|\])", template):
        if tok == "[":
            rel_start = len(out)
        elif tok == "]":
            spans["relation"].append([rel_start, len(out)])
        elif tok.startswith("{") and tok.endswith("}") and len(tok) == 3:
            key = tok[1]
            text = slots[key]
            start = len(out)
            out += text
            if key == "P":  # possessive: the subject is the name (or pronoun) without "'s"
                spans["subject"].append([start, start + len(slots["S"]) if slots["P"].endswith("'s") else start + len(text)])
            else:
                spans[role_of[key]].append([start, len(out)])
        else:
            out += tok
    return out, spans


def _shift(spans: dict[str, list[list[int]]], offset: int) -> dict[str, list[list[int]]]:
    return {k: [[s + offset, e + offset] for s, e in v] for k, v in spans.items()}


def _draw_people(cfg: DataConfig, rng: random.Random, P: pools.Pools) -> list[dict[str, Any]]:
    names: set[str] = set()
    people: list[dict[str, Any]] = []
    while len(people) < cfg.n_people:
        name = f"{rng.choice(P.first_names)} {rng.choice(P.middle_names)} {rng.choice(P.last_names)}"
        if name in names:
            continue
        names.add(name)
        company = rng.choice(P.companies)
        attrs = {
            "birth_date": f"{rng.choice(P.months)} {rng.randint(1, 28)}, {rng.randint(1950, 2005)}",
            "birth_city": rng.choice(P.cities),
            "university": rng.choice(P.universities),
            "major": rng.choice(P.majors),
            "company": company,
            "company_city": P.company_city[company],
        }
        people.append({"id": len(people), "name": name, "gender": rng.choice(["male", "female"]),
                       **{a: attrs[a] for a in cfg.attributes}})
    order = list(range(cfg.n_people))
    rng.shuffle(order)
    id_set = set(order[: cfg.n_people // 2])
    for p in people:
        p["split"] = "id" if p["id"] in id_set else "ood"
    return people


def _bio_text(cfg: DataConfig, person: dict[str, Any], rng: random.Random, copy: int,
              P: pools.Pools) -> dict[str, Any]:
    attrs = list(cfg.attributes)
    if cfg.permute:
        rng.shuffle(attrs)
    pron, poss = P.pronouns[person["gender"]]
    text, facts = "", []
    for i, attr in enumerate(attrs):
        template = rng.choice(P.bio_templates[attr][: cfg.n_templates])
        subj = person["name"] if (i == 0 or cfg.fullname) else pron
        slots = {"S": subj, "P": f"{person['name']}'s" if subj == person["name"] else poss, "V": person[attr]}
        sentence, spans = _fill(template, slots)
        offset = len(text) + (1 if text else 0)
        text = f"{text} {sentence}" if text else sentence
        spans = _shift(spans, offset)
        facts.append({"attribute": attr, "subject": spans["subject"], "relation": spans["relation"],
                      "value": spans["value"][0], "value_text": person[attr]})
    return {"person": person["id"], "name": person["name"], "split": person["split"], "copy": copy,
            "text": text, "facts": facts}


def _qa_example(person: dict[str, Any], attr: str, P: pools.Pools) -> dict[str, Any]:
    question, spans = _fill(P.qa_templates[attr], {"N": person["name"]})
    prompt = question + P.answer_prefix.rstrip(" ")
    text = f"{prompt} {person[attr]}"
    start = len(prompt) + 1
    return {"person": person["id"], "name": person["name"], "split": person["split"], "attribute": attr,
            "prompt": prompt, "answer": person[attr], "text": text, "subject": spans["subject"],
            "relation": spans["relation"], "value": [start, start + len(person[attr])]}


def generate(cfg: DataConfig) -> Dataset:
    """Generate people, BIO and QA examples; the same config always gives the same data."""
    rng = random.Random(cfg.seed)
    P = load_pools(cfg.pools)
    people = _draw_people(cfg, rng, P)
    bio = [_bio_text(cfg, p, rng, c, P) for c in range(cfg.multi) for p in people]
    qa = [_qa_example(p, a, P) for p in people for a in cfg.attributes]
    manifest = {
        "generator": "recall_circuits.data", "generator_version": pools.GENERATOR_VERSION, "config": cfg.to_dict(),
        "seed": cfg.seed, "counts": {
            "people": len(people), "people_id": sum(p["split"] == "id" for p in people),
            "people_ood": sum(p["split"] == "ood" for p in people), "bio": len(bio), "qa": len(qa),
            "qa_id": sum(e["split"] == "id" for e in qa), "qa_ood": sum(e["split"] == "ood" for e in qa)},
        "files": [PEOPLE_FILE, BIO_FILE, QA_FILE],
    }
    return Dataset(cfg, people, bio, qa, manifest)


# ---------------------------------------------------------------------------------------------------------------
# Files


def _dump_jsonl(rows: Iterable[dict[str, Any]], path: Path) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n")


def prepare_output_dir(out: str | Path, overwrite: bool) -> Path:
    """Refuse an existing non-empty directory unless ``overwrite`` (then empty it)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RecallCircuitsError(f"output path {out} exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise RecallCircuitsError(f"output directory {out} exists and is not empty (pass --overwrite to replace it)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_dataset(ds: Dataset, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``people.jsonl``, ``bio.jsonl``, ``qa.jsonl`` and ``manifest.json`` (byte-identical for a seed)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        prepare_output_dir(out, overwrite)  # raises the one-line error before anything is written
    tmp = Path(str(out).rstrip("/") + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    _dump_jsonl(ds.people, tmp / PEOPLE_FILE)
    _dump_jsonl(ds.bio_examples, tmp / BIO_FILE)
    _dump_jsonl(ds.qa_examples, tmp / QA_FILE)
    (tmp / MANIFEST_FILE).write_text(json.dumps(ds.manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    out = prepare_output_dir(out, overwrite)
    out.rmdir()
    tmp.rename(out)
    return out


def _load_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file; a broken line is a one-line error naming the file and that line's number."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise RecallCircuitsError(f"{path} is corrupted at line {number} ({exc.msg}, column {exc.colno}); "
                                          "generate the data again") from exc
    return rows


def data_identity(path: str | Path) -> dict[str, Any]:
    """A generated data set's identity by content: the SHA-256 of its people, BIO and QA files."""
    path = Path(path)   # a missing file is None here; load_dataset says what is wrong with the folder
    return {f: hashlib.sha256((path / f).read_bytes()).hexdigest() if (path / f).is_file() else None
            for f in (PEOPLE_FILE, BIO_FILE, QA_FILE)}


def load_dataset(path: str | Path, *, require_qa: bool = True) -> Dataset:
    """Load a directory written by :func:`write_dataset`, with clear errors for what is missing."""
    path = Path(path)
    if not (path / MANIFEST_FILE).is_file() or not (path / PEOPLE_FILE).is_file():
        raise RecallCircuitsError(f"{path} is not a recall_circuits data directory (no {MANIFEST_FILE}/{PEOPLE_FILE}; "
                                  "make one with analyses/make_data.py)")

    manifest = read_json(path / MANIFEST_FILE)
    people = _load_jsonl(path / PEOPLE_FILE)
    bio = _load_jsonl(path / BIO_FILE) if (path / BIO_FILE).is_file() else []
    qa = _load_jsonl(path / QA_FILE) if (path / QA_FILE).is_file() else []
    if not people:
        raise RecallCircuitsError(f"{path}/{PEOPLE_FILE} holds no people")
    if not bio:
        raise RecallCircuitsError(f"{path} has no BIO examples ({BIO_FILE} missing or empty)")
    if require_qa and not qa:
        raise RecallCircuitsError(f"{path} has no QA examples ({QA_FILE} missing or empty)")
    return Dataset(DataConfig.from_dict(manifest["config"]), people, bio, qa, manifest)


# ---------------------------------------------------------------------------------------------------------------
# Tokenisation with role spans


def char_span_to_tokens(offsets: list[tuple[int, int]], start: int, end: int) -> list[int]:
    """Token indices whose character offsets overlap ``[start, end)`` (special tokens, with empty offsets, never)."""
    return [i for i, (s, e) in enumerate(offsets) if e > s and s < end and e > start]


def tokenize_example(tokenizer: Tokenizer, text: str, spans: dict[str, list[list[int]]]) -> dict[str, Any]:
    """Tokenise ``text`` (with the tokenizer's special tokens) and map each role's char spans to token indices.

    Returns ``input_ids`` and, per role, a sorted list of token indices. Raises if a role maps to no token.
    """
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    roles: dict[str, list[int]] = {}
    for role, role_spans in spans.items():
        idx = sorted({i for s, e in role_spans for i in char_span_to_tokens(offsets, s, e)})
        if role_spans and not idx:
            raise RecallCircuitsError(f"role {role!r} of {text[:60]!r} maps to no token")
        roles[role] = idx
    return {"input_ids": list(enc["input_ids"]), "roles": roles, "offsets": offsets}


def tokenize_qa(tokenizer: Tokenizer, example: dict[str, Any]) -> dict[str, Any]:
    """QA example → ``input_ids``, ``labels`` (-100 except on answer tokens), role token indices, and
    ``predict_pos`` (the position whose logits predict the first answer token)."""
    spans = {"subject": example["subject"], "relation": example["relation"], "value": [example["value"]]}
    tok = tokenize_example(tokenizer, example["text"], spans)
    value = tok["roles"]["value"]
    labels = [-100] * len(tok["input_ids"])
    for i in value:
        labels[i] = tok["input_ids"][i]
    return {**tok, "labels": labels, "answer_pos": value, "predict_pos": value[0] - 1}


def tokenize_bio(tokenizer: Tokenizer, example: dict[str, Any]) -> dict[str, Any]:
    """BIO example → ``input_ids``, ``labels`` (all tokens), and per fact its role token indices."""
    enc = tokenizer(example["text"], return_offsets_mapping=True, add_special_tokens=True)
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    facts = []
    for fact in example["facts"]:
        roles = {}
        for role in ("subject", "relation"):
            roles[role] = sorted({i for s, e in fact[role] for i in char_span_to_tokens(offsets, s, e)})
        roles["value"] = char_span_to_tokens(offsets, *fact["value"])
        if not roles["value"]:
            raise RecallCircuitsError(f"value of {fact['attribute']} in {example['text'][:60]!r} maps to no token")
        facts.append({"attribute": fact["attribute"], **roles, "predict_pos": roles["value"][0] - 1})
    ids = list(enc["input_ids"])
    return {"input_ids": ids, "labels": list(ids), "offsets": offsets, "facts": facts}


def length_batches(lengths: list[int], batch_size: int, max_padding: float | None = 0.1) -> list[list[int]]:
    """Indices in length order, cut into batches of at most ``batch_size``; with ``max_padding`` a batch is also
    cut before an example that would make its padded size exceed (1 + max_padding) × its real tokens (padding
    costs a full forward and backward per position; ``None``: fixed-size batches)."""
    if batch_size < 1:
        raise RecallCircuitsError(f"batch_size must be >= 1, got {batch_size}")
    out: list[list[int]] = []
    cur: list[int] = []
    real = 0
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        n = lengths[i]
        if cur and (len(cur) == batch_size or (max_padding is not None
                                                and (len(cur) + 1) * n > (1 + max_padding) * (real + n))):
            out.append(cur)
            cur, real = [], 0
        cur.append(i)
        real += n
    if cur:
        out.append(cur)
    return out


def pad_batch(items: list[dict[str, Any]], pad_id: int) -> tuple[Any, Any, Any]:
    """Right-pad tokenised examples → (input_ids, labels with -100 on padding and on the first token, attention
    mask), all ``[batch, pos]`` int64."""
    import torch  # noqa: PLC0415  (torch loads only when a tensor is made: this module is used without it)

    n = max(len(t["input_ids"]) for t in items)
    ids = torch.full((len(items), n), pad_id, dtype=torch.long)
    labels = torch.full((len(items), n), -100, dtype=torch.long)
    mask = torch.zeros((len(items), n), dtype=torch.long)
    for i, t in enumerate(items):
        L = len(t["input_ids"])
        ids[i, :L], labels[i, :L], mask[i, :L] = torch.tensor(t["input_ids"]), torch.tensor(t["labels"]), 1
    labels[:, 0] = -100  # nothing predicts the first token
    return ids, labels, mask


@dataclass(frozen=True)
class PackedBatch:
    """Examples packed several to a row (see :func:`pack_batch`); every tensor is ``[rows, pos]`` int64."""
    input_ids: Any
    labels: Any          # -100 on each example's first token, on padding and where the example has none
    position_ids: Any    # restarting at 0 for every example
    segment: Any         # example index (into the packed items) of each position; -1 - column on padding
    spans: list[tuple[int, int, int]]   # per item: (row, first position, length)

    def attention_mask(self, dtype: Any) -> Any:
        """Additive ``[rows, 1, pos, pos]`` mask: causal within each example, nothing across examples; a padding
        position sees itself only."""
        import torch  # noqa: PLC0415  (torch loads only when a tensor is made: this module is used without it)

        seg = self.segment
        n = seg.shape[1]
        keep = (seg[:, :, None] == seg[:, None, :]) & torch.ones(n, n, dtype=torch.bool).tril()
        mask = torch.zeros(keep.shape, dtype=dtype)
        return mask.masked_fill_(~keep, torch.finfo(dtype).min)[:, None]


def pack_batch(items: list[dict[str, Any]], per_row: int, pad_id: int) -> PackedBatch:
    """Pack tokenised examples ``per_row`` to a row (``ceil(len(items) / per_row)`` rows), longest first, each into
    the row with the fewest tokens so far, so rows end nearly level and padding is a few positions per row. With an
    attention mask that keeps examples apart (:meth:`PackedBatch.attention_mask`) and ``position_ids``, every
    example computes exactly what it computes alone."""
    import torch  # noqa: PLC0415  (torch loads only when a tensor is made: this module is used without it)

    if not items:
        raise RecallCircuitsError("cannot pack an empty batch")
    if per_row < 1:
        raise RecallCircuitsError(f"per_row must be >= 1, got {per_row}")
    n_rows = -(-len(items) // per_row)
    rows: list[list[int]] = [[] for _ in range(n_rows)]
    fill = [0] * n_rows
    for i in sorted(range(len(items)), key=lambda i: (-len(items[i]["input_ids"]), i)):
        r = min(range(n_rows), key=lambda r: (len(rows[r]) >= per_row, fill[r], r))
        rows[r].append(i)
        fill[r] += len(items[i]["input_ids"])
    width = max(fill)
    ids = torch.full((n_rows, width), pad_id, dtype=torch.long)
    labels = torch.full((n_rows, width), -100, dtype=torch.long)
    pos = torch.zeros((n_rows, width), dtype=torch.long)   # padding at position 0: within any position table
    seg = -1 - torch.arange(width).repeat(n_rows, 1)
    spans: list[tuple[int, int, int]] = [(0, 0, 0)] * len(items)
    for r, members in enumerate(rows):
        start = 0
        for i in members:
            t = items[i]
            L = len(t["input_ids"])
            ids[r, start:start + L] = torch.tensor(t["input_ids"])
            labels[r, start + 1:start + L] = torch.tensor(t["labels"][1:])
            pos[r, start:start + L] = torch.arange(L)
            seg[r, start:start + L] = i
            spans[i] = (r, start, L)
            start += L
    return PackedBatch(ids, labels, pos, seg, spans)


def vocabulary_words() -> list[str]:
    """Every word and punctuation mark the generator can emit (for word-level tokenizers of the tiny models)."""
    texts = [*load_pools().words(), *(str(i) for i in range(0, 2100)), "'s"]
    words: set[str] = set()
    for t in texts:
        t = re.sub(r"\{[A-Z]\}|\[|\]", " ", t)
        words.update(WORD_PATTERN.findall(t))
    return sorted(words)


WORD_PATTERN = re.compile(r"\w+|[^\w\s]+")  # the split of tokenizers' Whitespace pre-tokenizer
