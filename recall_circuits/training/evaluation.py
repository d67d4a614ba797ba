"""QA accuracy (ID / OOD) and BIO recall of a causal LM on bioS data.

Exact match of greedy decoding is computed by teacher forcing: greedy generation reproduces the answer tokens
exactly iff, at every answer position, the arg-max of the logits given the true prefix is the true next token. So one
batched forward over ``prompt + answer`` gives the exact-match and first-token accuracy of greedy decoding (ties in
the arg-max aside); :func:`generate_answers` runs real batched greedy generation (left-padded) to show answers and
to check this equivalence in the tests. BIO recall is the same check on each attribute value inside a biography.

Example::

    res = rc.evaluate(hf_model, tokenizer, dataset)   # an Evaluation
    res.accuracy["qa_ood"], res.interval("qa_ood")      # exact match, and its bootstrap interval over people
    res.to_dataframe()                                  # measure × attribute: acc, first_token_acc, n
    rc.evaluate(hf_model, tokenizer, dataset, floor=True).above_floor()   # QA-OOD − its chance floor, paired

The chance floor of QA-OOD (``floor=True``, measure ``qa_floor``) asks each OOD question and scores it against the
answer of *another* OOD person to the same attribute (a fixed derangement, :func:`floor_examples`): what a model
that answers without knowing the person gets, including the answers two people happen to share.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from recall_circuits import checks
from recall_circuits.data.bios import Dataset, length_batches, tokenize_bio, tokenize_qa
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.hints import Bridge, LanguageModel, Tokenizer
from recall_circuits.results import Result
from recall_circuits.training.intervals import accuracy_interval, gap_interval


def _pad_right(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


def _logits(model: LanguageModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logits of an HF model or a TransformerBridge for a right-padded batch."""
    if hasattr(model, "run_with_cache"):  # TransformerBridge: right padding does not affect real tokens (causal)
        return model(ids, attention_mask=mask)
    return model(input_ids=ids, attention_mask=mask).logits


@torch.inference_mode()
def score_targets(model: LanguageModel, seqs: list[list[int]], targets: list[list[int]], pad_id: int,
                  batch_size: int = 32) -> list[tuple[bool, bool]]:
    """For each sequence and its target positions, (all arg-max correct, first arg-max correct).

    ``targets[i]`` lists the token positions whose ids must be predicted from position - 1.
    """
    device = next(model.parameters()).device
    results: dict[int, tuple[bool, bool]] = {}
    for chunk in length_batches([len(s) for s in seqs], batch_size, None):   # length-sorted: little padding
        ids, mask = _pad_right([seqs[i] for i in chunk], pad_id)
        pred = _logits(model, ids.to(device), mask.to(device)).argmax(-1).cpu()
        for row, i in enumerate(chunk):
            pos = torch.tensor(targets[i])
            ok = pred[row, pos - 1] == ids[row, pos]
            results[i] = (bool(ok.all()), bool(ok[0]))
    return [results[i] for i in range(len(seqs))]


@torch.inference_mode()
def answer_logprob(model: Bridge, example: dict[str, Any]) -> float:
    """log P(answer | question) of one QA example (from ``Dataset.qa()``), teacher forced: the sum over the
    answer's tokens."""
    checks.bridge(model)
    checks.qa_example(example)
    t = tokenize_qa(model.tokenizer, example)
    ids = torch.tensor([t["input_ids"]], device=next(model.parameters()).device)
    lp = model(ids)[0].float().log_softmax(-1)
    return float(sum(lp[p - 1, ids[0, p]] for p in t["answer_pos"]))


def evaluate_qa(model: LanguageModel, tokenizer: Tokenizer, examples: list[dict[str, Any]], batch_size: int = 32
                ) -> dict[str, Any]:
    """Greedy exact match and first-token accuracy over QA examples, overall and per attribute."""
    if not examples:
        raise RecallCircuitsError("no QA examples to evaluate")
    toks = [tokenize_qa(tokenizer, e) for e in examples]
    scores = score_targets(model, [t["input_ids"] for t in toks], [t["answer_pos"] for t in toks],
                           tokenizer.pad_token_id, batch_size)
    return _summarise(scores, [e["attribute"] for e in examples], [e["person"] for e in examples])


def floor_examples(examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chance floor's examples: each QA example asked as it is and answered with the answer of the next person
    (people in id order, the last one taking the first one's answers: a derangement) to the same attribute. Each
    keeps the asking ``person`` (so the floor's per-person table pairs with the accuracy's) and names the person
    whose answer it carries in ``answer_of``."""
    people = sorted({e["person"] for e in examples})
    if len(people) < 2:
        raise RecallCircuitsError(f"a chance floor needs at least 2 people, got {len(people)}")
    nxt = {p: people[(i + 1) % len(people)] for i, p in enumerate(people)}
    answers = {(e["person"], e["attribute"]): e["answer"] for e in examples}
    out = []
    for e in examples:
        key = (nxt[e["person"]], e["attribute"])
        if key not in answers:
            raise RecallCircuitsError(f"person {key[0]} has no {key[1]!r} question to take the floor's answer from")
        other = answers[key]
        start = e["value"][0]
        out.append({**e, "answer": other, "text": e["text"][:start] + other, "value": [start, start + len(other)],
                    "answer_of": key[0]})
    return out


def evaluate_bio(model: LanguageModel, tokenizer: Tokenizer, examples: list[dict[str, Any]], batch_size: int = 16
                 ) -> dict[str, Any]:
    """BIO recall: each attribute value of each biography completed greedily from the true preceding text."""
    if not examples:
        raise RecallCircuitsError("no BIO examples to evaluate")
    seqs, targets, attrs, people = [], [], [], []
    for e in examples:
        t = tokenize_bio(tokenizer, e)
        for f in t["facts"]:
            seqs.append(t["input_ids"])
            targets.append(f["value"])
            attrs.append(f["attribute"])
            people.append(e["person"])
    # one forward per biography: score all facts of a text together
    uniq: dict[tuple[int, ...], int] = {}
    for s in seqs:
        uniq.setdefault(tuple(s), len(uniq))
    seq_list = [list(s) for s in uniq]
    device = next(model.parameters()).device
    preds: dict[int, torch.Tensor] = {}
    with torch.inference_mode():
        for chunk in length_batches([len(s) for s in seq_list], batch_size, None):
            ids, mask = _pad_right([seq_list[i] for i in chunk], tokenizer.pad_token_id)
            pred = _logits(model, ids.to(device), mask.to(device)).argmax(-1).cpu()
            for row, i in enumerate(chunk):
                preds[i] = pred[row]
    scores = []
    for s, tgt in zip(seqs, targets):
        p = preds[uniq[tuple(s)]]
        pos = torch.tensor(tgt)
        ok = p[pos - 1] == torch.tensor(s)[pos]
        scores.append((bool(ok.all()), bool(ok[0])))
    return _summarise(scores, attrs, people)


def _summarise(scores: list[tuple[bool, bool]], attrs: list[str], people: list[Any]) -> dict[str, Any]:
    per: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    by_person: dict[str, list[int]] = {}
    for s, a, who in zip(scores, attrs, people):
        per[a].append(s)
        row = by_person.setdefault(str(who), [0, 0])
        row[0] += int(s[0])
        row[1] += 1
    return {
        "acc": sum(s[0] for s in scores) / len(scores),
        "first_token_acc": sum(s[1] for s in scores) / len(scores),
        "n": len(scores),
        "per_attribute": {a: {"acc": sum(x[0] for x in v) / len(v), "first_token_acc": sum(x[1] for x in v) / len(v),
                              "n": len(v)} for a, v in sorted(per.items())},
        "per_person": by_person,   # person id -> [exact matches, questions or facts]: for intervals over people
    }


def floor_interval(flat: dict[str, Any]) -> dict[str, float] | None:
    """QA-OOD minus its chance floor on the same people, paired bootstrap 95% interval (``{"value", "low", "high",
    "level"}``), of an evaluation in the flat ``results.json`` form; None for one evaluated without the floor."""
    a, b = flat.get("qa_ood_per_person"), flat.get("qa_floor_per_person")
    return gap_interval(a, b).to_dict() if a and b else None


def flat_keys(measure: str) -> tuple[str, str, str]:
    """(exact-match key, first-token key, prefix of the per-attribute / per-person keys) of a measure in the flat
    ``results.json`` form: ``qa_ood`` → ``qa_ood_acc``, ``qa_ood_first_token_acc``, ``qa_ood``; ``bio_id`` →
    ``bio_recall_id``, ``bio_recall_id_first_token``, ``bio_recall_id``."""
    kind, split = measure.split("_")
    if kind == "qa":
        return f"qa_{split}_acc", f"qa_{split}_first_token_acc", f"qa_{split}"
    return f"bio_recall_{split}", f"bio_recall_{split}_first_token", f"bio_recall_{split}"


@dataclass(frozen=True, eq=False)
class Evaluation(Result):
    """What :func:`evaluate` measured. Measures are ``qa_id``, ``qa_ood`` (greedy exact match on the QA of ID and
    OOD people) and, when BIO was evaluated, ``bio_id``, ``bio_ood`` (BIO recall). For each measure:
    ``qa_floor`` (with ``floor=True``): the chance floor of ``qa_ood`` (:func:`floor_examples`). For each measure:
    ``accuracy`` (exact match), ``first_token`` (first-token accuracy), ``per_attribute[m][attr]`` (``acc``,
    ``first_token_acc``, ``n``) and ``per_person[m][person id]`` = [exact matches, questions or facts], the table
    the bootstrap intervals resample."""

    MEASURES: ClassVar[tuple[str, ...]] = ("qa_id", "qa_ood", "qa_floor", "bio_id", "bio_ood")

    accuracy: dict[str, float]
    first_token: dict[str, float]
    per_attribute: dict[str, dict[str, dict[str, Any]]]
    per_person: dict[str, dict[str, list[int]]]

    def interval(self, measure: str, *, n_draws: int = 2000, seed: int = 0) -> Any:
        """The 95% percentile-bootstrap interval over people of ``accuracy[measure]`` (an ``Interval``)."""
        if measure not in self.per_person:
            raise RecallCircuitsError(f"no measure {measure!r} here (have: {', '.join(self.per_person)})")
        return accuracy_interval(self.per_person[measure], n_draws=n_draws, seed=seed)

    def above_floor(self, *, n_draws: int = 2000, seed: int = 0) -> Any:
        """QA-OOD minus its chance floor on the same people, with a paired bootstrap interval (an ``Interval``)."""
        if "qa_floor" not in self.per_person:
            raise RecallCircuitsError("this evaluation has no chance floor (evaluate with floor=True)")
        return gap_interval(self.per_person["qa_ood"], self.per_person["qa_floor"], n_draws=n_draws, seed=seed)

    def to_dataframe(self) -> Any:
        """One row per measure and attribute, plus an ``all`` row per measure."""
        import pandas as pd  # noqa: PLC0415  (pandas loads only for a DataFrame)

        rows = []
        for m, acc in self.accuracy.items():
            n = sum(v["n"] for v in self.per_attribute[m].values())
            rows.append({"measure": m, "attribute": "all", "acc": acc, "first_token_acc": self.first_token[m], "n": n})
            rows += [{"measure": m, "attribute": a, **v} for a, v in self.per_attribute[m].items()]
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        """The flat form fine-tuning writes to ``results.json`` (``qa_id_acc``, ``bio_recall_ood_per_person``, …)."""
        out: dict[str, Any] = {}
        for m in self.accuracy:
            key, first, base = flat_keys(m)
            out[key], out[first] = self.accuracy[m], self.first_token[m]
            out[f"{base}_per_attribute"] = self.per_attribute[m]
            out[f"{base}_per_person"] = self.per_person[m]
        return out

    @classmethod
    def from_dict(cls, flat: dict[str, Any]) -> Evaluation:
        """Read the flat form back (a fine-tuning run's ``results.json``)."""
        acc, first, per_attr, per_person = {}, {}, {}, {}
        for m in cls.MEASURES:
            key, fkey, base = flat_keys(m)
            if key in flat:
                acc[m], first[m] = flat[key], flat[fkey]
                per_attr[m], per_person[m] = flat[f"{base}_per_attribute"], flat[f"{base}_per_person"]
        return cls(acc, first, per_attr, per_person)


def evaluate(model: LanguageModel, tokenizer: Tokenizer, dataset: Dataset, *, batch_size: int = 32, bio: bool = True,
             max_people: int | None = None, floor: bool = False) -> Evaluation:
    """The headline metrics: QA exact match / first token for ID and OOD people, BIO recall for both; with
    ``floor`` also QA-OOD's chance floor (measure ``qa_floor``, :func:`floor_examples`)."""
    keep = None
    if max_people is not None:
        keep = set(dataset.person_ids("id")[:max_people]) | set(dataset.person_ids("ood")[:max_people])
    def kept(examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in examples if keep is None or e["person"] in keep]

    qa = {split: kept(dataset.qa(split)) for split in ("id", "ood")}
    jobs = {f"qa_{split}": (evaluate_qa, examples, batch_size) for split, examples in qa.items()}
    if floor:
        jobs["qa_floor"] = (evaluate_qa, floor_examples(qa["ood"]), batch_size)
    if bio:
        jobs |= {f"bio_{split}": (evaluate_bio, [e for e in kept(dataset.bio(split)) if e.get("copy", 0) == 0],
                                  max(1, batch_size // 2)) for split in ("id", "ood")}
    was_training = getattr(model, "training", False)
    model.eval()
    acc, first, per_attr, per_person = {}, {}, {}, {}
    try:
        for m, (measure, examples, size) in jobs.items():
            r = measure(model, tokenizer, examples, size)
            acc[m], first[m], per_attr[m], per_person[m] = (r["acc"], r["first_token_acc"], r["per_attribute"],
                                                            r["per_person"])
    finally:
        model.train(was_training)
    return Evaluation(acc, first, per_attr, per_person)


@torch.inference_mode()
def generate_answers(model: LanguageModel, tokenizer: Tokenizer, prompts: list[str], max_new_tokens: int = 12,
                     batch_size: int = 32) -> list[list[int]]:
    """Batched greedy generation from left-padded prompts (HF model); returns the generated token ids per prompt.

    Position ids follow the attention mask, so left padding does not shift positions (any architecture).
    """
    device = next(model.parameters()).device
    outs: list[list[int]] = []
    for start in range(0, len(prompts), batch_size):
        enc = [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts[start:start + batch_size]]
        n = max(len(e) for e in enc)
        ids = torch.full((len(enc), n), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, e in enumerate(enc):
            ids[i, n - len(e):] = torch.tensor(e)
            mask[i, n - len(e):] = 1
        ids, mask = ids.to(device), mask.to(device)
        new: list[list[int]] = [[] for _ in enc]
        past = None
        cur_ids, cur_mask = ids, mask
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        for _ in range(max_new_tokens):
            out = model(input_ids=cur_ids, attention_mask=cur_mask, position_ids=pos, past_key_values=past,
                        use_cache=True)
            past = out.past_key_values
            nxt = out.logits[:, -1].argmax(-1)
            for i, t in enumerate(nxt.tolist()):
                new[i].append(t)
            cur_ids = nxt[:, None]
            cur_mask = torch.cat([cur_mask, torch.ones_like(cur_ids)], dim=1)
            pos = pos[:, -1:] + 1
        outs.extend(new)
    return outs
