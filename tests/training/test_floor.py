"""QA-OOD's chance floor: each OOD question scored against the answer of another OOD person (a fixed derangement),
checked against a hand count on a model whose answers are planted."""

from types import SimpleNamespace

import pytest
import torch

from recall_circuits.data.bios import load_dataset, tokenize_qa
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.models.loading import load_hf
from recall_circuits.training.evaluation import Evaluation, evaluate, floor_examples


def _with_answer(e, answer):
    start = e["value"][0]
    return {**e, "answer": answer, "text": e["text"][:start] + answer, "value": [start, start + len(answer)]}


class _Planted(torch.nn.Module):
    """Answers each question with a planted answer (by its prompt's tokens), and predicts token 0 elsewhere."""

    def __init__(self, tok, planted):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.vocab = len(tok)
        self.table = {}
        for e, answer in planted:
            t = tokenize_qa(tok, _with_answer(e, answer))
            p = t["answer_pos"][0]
            self.table[tuple(t["input_ids"][:p])] = t["input_ids"]
        self.lengths = sorted({len(k) for k in self.table})

    def forward(self, input_ids, attention_mask=None):
        nxt = torch.zeros_like(input_ids)
        for r, row in enumerate(input_ids.tolist()):
            for n in self.lengths:
                full = self.table.get(tuple(row[:n]))
                if full is not None:
                    for j in range(n - 1, min(len(full), len(row)) - 1):
                        nxt[r, j] = full[j + 1]
        return SimpleNamespace(logits=torch.nn.functional.one_hot(nxt, self.vocab).float())


def test_floor_equals_a_hand_count(tiny_dirs, tiny_data):
    _, tok = load_hf(tiny_dirs["tiny-llama"])
    ds = load_dataset(tiny_data)
    ood = ds.qa("ood")
    people = sorted({e["person"] for e in ood})
    nxt = {p: people[(i + 1) % len(people)] for i, p in enumerate(people)}
    own = {(e["person"], e["attribute"]): e["answer"] for e in ood}
    # planted: people at even places answer for themselves, the others with their neighbour's answers
    chosen = {(e["person"], e["attribute"]): own[(e["person"] if people.index(e["person"]) % 2 == 0
                                                  else nxt[e["person"]], e["attribute"])] for e in ood}
    model = _Planted(tok, [(e, chosen.get((e["person"], e["attribute"]), e["answer"])) for e in ds.qa()])
    ev = evaluate(model, tok, ds, bio=False, floor=True)
    n = len(ood)
    hand_ood = sum(chosen[k] == own[k] for k in own) / n
    hand_floor = sum(chosen[(p, a)] == own[(nxt[p], a)] for p, a in own) / n
    assert 0 < hand_floor < 1 and 0 < hand_ood < 1
    assert ev.accuracy["qa_ood"] == pytest.approx(hand_ood) and ev.accuracy["qa_floor"] == pytest.approx(hand_floor)
    # per attribute and per person, by hand too
    for a in {e["attribute"] for e in ood}:
        keys = [k for k in own if k[1] == a]
        assert ev.per_attribute["qa_floor"][a]["acc"] == pytest.approx(
            sum(chosen[(p, a)] == own[(nxt[p], a)] for p, _ in keys) / len(keys))
    for p in people:
        keys = [k for k in own if k[0] == p]
        assert ev.per_person["qa_floor"][str(p)] == [sum(chosen[k] == own[(nxt[p], k[1])] for k in keys), len(keys)]
    iv = ev.above_floor()
    assert iv.value == pytest.approx(hand_ood - hand_floor) and iv.low <= iv.value <= iv.high
    # the flat form carries it (results.json) and reads back
    flat = ev.to_dict()
    assert flat["qa_floor_acc"] == ev.accuracy["qa_floor"] and Evaluation.from_dict(flat) == ev
    assert not evaluate(model, tok, ds, bio=False).per_person.get("qa_floor")
    with pytest.raises(RecallCircuitsError, match="no chance floor"):
        evaluate(model, tok, ds, bio=False).above_floor()


def test_floor_examples_are_a_derangement(tiny_data):
    ood = load_dataset(tiny_data).qa("ood")
    fl = floor_examples(ood)
    assert len(fl) == len(ood) and all(f["answer_of"] != f["person"] for f in fl)
    assert sorted(f["answer_of"] for f in fl) == sorted(e["person"] for e in ood)    # each answer used once
    for f, e in zip(fl, ood):
        assert f["prompt"] == e["prompt"] and f["text"] == f"{e['prompt']} {f['answer']}"
        assert f["text"][f["value"][0]:f["value"][1]] == f["answer"]
    with pytest.raises(RecallCircuitsError, match="at least 2 people"):
        floor_examples([e for e in ood if e["person"] == ood[0]["person"]])


def test_pair_row_reports_the_floor():
    from recall_circuits.runs.regime import Setting, pair_row, table_markdown

    def arm(ood, floor):
        pp = {str(i): [int(i < ood), 1] for i in range(10)}
        fl = {str(i): [int(i < floor), 1] for i in range(10)}
        return {"qa_id_acc": 1.0, "qa_ood_acc": ood / 10, "qa_id_per_person": {"0": [1, 1]}, "qa_ood_per_person": pp,
                "qa_floor_per_person": fl, "bio_recall_id": 1.0, "bio_recall_ood": 1.0, "steps": 1, "wall_s": 1.0,
                "after_bio": {"bio_recall_id": 1.0, "bio_recall_ood": 1.0}}
    row = pair_row(Setting("Z"), arm(6, 1), arm(2, 2))
    assert row["mixed_qa_floor"]["value"] == pytest.approx(0.1)
    assert row["mixed_above_floor"]["value"] == pytest.approx(0.5) and row["stage_above_floor"]["value"] == 0.0
    assert "0.500 [" in table_markdown({"Z": row})
    old = {k: v for k, v in arm(6, 1).items() if k != "qa_floor_per_person"}
    assert "mixed_qa_floor" not in pair_row(Setting("Z"), old, old)
    assert "| – |" in table_markdown({"Z": pair_row(Setting("Z"), old, old)})
