import json
import re

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from recall_circuits.data.bios import DataConfig, generate, load_dataset, tokenize_bio, tokenize_qa, write_dataset
from recall_circuits.data.pools import ATTRIBUTES, DEFAULT_DIR, load_pools
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.models.registry import build_word_tokenizer


def _bpe_tokenizer(ds):
    """A byte-level BPE tokenizer trained offline on the data: a second, sub-word tokenizer."""
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    texts = [e["text"] for e in ds.bio_examples + ds.qa_examples]
    tk.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>")


pools = load_pools()


def test_pools_sizes():
    assert pools.directory == str(DEFAULT_DIR) and DEFAULT_DIR.parts[-2:] == ("data", "pools")
    assert len(set(pools.first_names)) >= 200 and len(set(pools.middle_names)) >= 200
    assert len(set(pools.last_names)) >= 400 and len(set(pools.cities)) >= 100
    assert len(set(pools.universities)) >= 100 and len(set(pools.majors)) >= 60 and len(set(pools.companies)) >= 100
    assert all(len(t) >= 10 for t in pools.bio_templates.values()) and len(pools.qa_templates) == 6


def _copy_pools(tmp_path):
    d = tmp_path / "pools"
    d.mkdir()
    for f in DEFAULT_DIR.iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    return d


def test_your_own_pools_are_used_and_recorded(tmp_path):
    d = _copy_pools(tmp_path)
    (d / "majors.txt").write_text("Alchemy\nAstrology\n")
    ds = generate(DataConfig(n_people=20, seed=0, pools=str(d)))
    assert {p["major"] for p in ds.people} == {"Alchemy", "Astrology"}
    assert ds.manifest["config"]["pools"] == str(d)
    assert "pools" not in generate(DataConfig(n_people=4, seed=0)).manifest["config"]   # default: as before
    again = DataConfig.from_dict(ds.manifest["config"])
    assert generate(again).people == ds.people


@pytest.mark.parametrize("change, message", [
    (lambda d: (d / "cities.txt").unlink(), "missing cities.txt"),
    (lambda d: (d / "majors.txt").write_text("Art\nArt\n"), "repeated values ['Art']"),
    (lambda d: (d / "months.txt").write_text("May\n"), "12 months expected"),
    (lambda d: (d / "companies.tsv").write_text("company\tcity\nAcme\n"), "companies.tsv"),
    (lambda d: (d / "bio_templates.json").write_text("{"), "not valid JSON"),
    (lambda d: (d / "bio_templates.json").write_text(
        (d / "bio_templates.json").read_text().replace("[was born on] {V}", "{V} [was born on]")),
     "must hold {V} after the relation words"),
    (lambda d: (d / "qa_templates.json").write_text(
        (d / "qa_templates.json").read_text().replace("of {N}?", "of them?")), "must name the person"),
])
def test_bad_pools_are_one_line_errors(tmp_path, change, message):
    d = _copy_pools(tmp_path)
    change(d)
    with pytest.raises(RecallCircuitsError, match=None) as ex:
        DataConfig(n_people=4, pools=str(d))
    assert message in str(ex.value) and "\n" not in str(ex.value)


def test_same_seed_byte_identical(tmp_path):
    for d in ("a", "b"):
        write_dataset(generate(DataConfig(n_people=30, seed=3)), tmp_path / d)
    for f in ("people.jsonl", "bio.jsonl", "qa.jsonl", "manifest.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    write_dataset(generate(DataConfig(n_people=30, seed=4)), tmp_path / "c")
    assert (tmp_path / "a" / "people.jsonl").read_bytes() != (tmp_path / "c" / "people.jsonl").read_bytes()


def test_split_disjoint_and_names_unique(tmp_path):
    ds = generate(DataConfig(n_people=51, seed=1))
    ids, ood = set(ds.person_ids("id")), set(ds.person_ids("ood"))
    assert not ids & ood and len(ids) == 25 and len(ood) == 26 and ids | ood == set(range(51))
    assert len({p["name"] for p in ds.people}) == 51
    assert {e["person"] for e in ds.qa("id")} == ids and {e["person"] for e in ds.qa("ood")} == ood
    assert {e["person"] for e in ds.bio()} == ids | ood  # BIO of everyone
    for p in ds.people:  # company city fixed by the company
        assert p["company_city"] == pools.company_city[p["company"]]
    people = [json.loads(x) for x in open(write_dataset(ds, tmp_path / "d") / "people.jsonl")]
    assert {"name", "split", *ATTRIBUTES} <= set(people[0])


def test_char_spans_are_right():
    ds = generate(DataConfig(n_people=20, seed=2))
    for e in ds.bio():
        person = ds.people[e["person"]]
        for f in e["facts"]:
            assert e["text"][slice(*f["value"])] == person[f["attribute"]]
            subj = [e["text"][s:t] for s, t in f["subject"]]
            assert subj and all(x in (person["name"], "He", "She", "His", "Her") for x in subj)
            rel = " ".join(e["text"][s:t] for s, t in f["relation"])
            assert any(rel == re.search(r"\[(.*?)\]", t).group(1) for t in pools.bio_templates[f["attribute"]])
    for e in ds.qa():
        assert e["text"][slice(*e["value"])] == e["answer"] and e["text"].startswith(e["prompt"])
        assert [e["text"][s:t] for s, t in e["subject"]] == [e["name"]]


@pytest.mark.parametrize("which", ["word", "bpe"])
def test_token_spans_decode_to_roles(which):
    ds = generate(DataConfig(n_people=20, seed=2))
    tok = build_word_tokenizer() if which == "word" else _bpe_tokenizer(ds)
    norm = lambda s: re.sub(r"\s+", "", s)  # noqa: E731  (word-level decoding re-spaces punctuation)
    for e in ds.qa():
        t = tokenize_qa(tok, e)
        assert norm(tok.decode([t["input_ids"][i] for i in t["roles"]["value"]])) == norm(e["answer"])
        assert norm(tok.decode([t["input_ids"][i] for i in t["roles"]["subject"]])) == norm(e["name"])
        assert [i for i, lab in enumerate(t["labels"]) if lab != -100] == t["answer_pos"] == t["roles"]["value"]
        assert t["predict_pos"] == t["answer_pos"][0] - 1
    for e in ds.bio():
        t = tokenize_bio(tok, e)
        for f, fact in zip(t["facts"], e["facts"]):
            assert norm(tok.decode([t["input_ids"][i] for i in f["value"]])) == norm(fact["value_text"])


def test_augmentations():
    ds = generate(DataConfig(n_people=6, seed=0, multi=3, permute=True, fullname=True))
    assert len(ds.bio()) == 18
    orders = {tuple(f["attribute"] for f in e["facts"]) for e in ds.bio()}
    assert len(orders) > 1
    for e in ds.bio():
        assert e["text"].count(e["name"]) == 6


def test_bad_input(tmp_path):
    with pytest.raises(RecallCircuitsError, match="at least 2"):
        DataConfig(n_people=1)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("hi")
    with pytest.raises(RecallCircuitsError, match="not empty"):
        write_dataset(generate(DataConfig(n_people=4)), tmp_path / "x")
    assert (tmp_path / "x" / "keep.txt").exists() and not (tmp_path / "x.partial").exists()
    write_dataset(generate(DataConfig(n_people=4)), tmp_path / "x", overwrite=True)
    assert not (tmp_path / "x" / "keep.txt").exists()
    with pytest.raises(RecallCircuitsError, match="not a recall_circuits data directory"):
        load_dataset(tmp_path)


def test_make_data_cli(tmp_path, capsys):
    from analyses.make_data import main

    assert main(["--people", "1", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
    assert main(["--people", "6", "--seed", "1", "--out", str(tmp_path / "a")]) == 0
    assert main(["--people", "6", "--out", str(tmp_path / "a")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["--people", "6", "--out", str(tmp_path / "a"), "--overwrite"]) == 0
