"""Every analysis returns a typed result that round-trips through save/load bit for bit, and gives a DataFrame."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
import torch

import recall_circuits as rc
from recall_circuits.data.bios import DataConfig, generate
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.models.params import ParamSpace

DS = generate(DataConfig(n_people=4, seed=0))


def _mask(space):
    return torch.rand(space.P, generator=torch.Generator().manual_seed(0)) < 0.01


def _results(bridges):
    """One result of every analysis type, on tiny models (the pretrained side is another architecture-mate)."""
    llama, gpt2 = bridges["tiny-llama"], bridges["tiny-gpt2"]
    order = rc.ranking(torch.arange(llama.cfg.n_layers * llama.cfg.n_heads, dtype=torch.float).reshape(
        llama.cfg.n_layers, llama.cfg.n_heads))
    space = ParamSpace(gpt2)
    mask = _mask(space)
    pair = rc.qa_patching_pairs(gpt2.tokenizer, DS, 1, "all")[0]
    return {
        "HeadCurves": rc.head_curves(llama, llama, DS, {"r": order}, [0, 1, 2], batch_size=8),
        "SingleHeadSweep": rc.single_head_sweep(llama, llama, DS, layers=[1], batch_size=8),   # NaN rows kept
        "RoleMasses": rc.role_masses(gpt2, DS, [0, 1]),
        "GradientConsistency": rc.gradient_consistency(gpt2, DS, [0]),
        "RepresentationConsistency": rc.representation_consistency(gpt2, DS, [0, 1]),
        "InputSignature": rc.input_signature(gpt2, DS, [0]),
        "HeadStats": rc.head_stats(space, mask),
        "HeadStats (attention only)": rc.head_stats(
            ParamSpace(gpt2, include=("attn",)), torch.zeros(ParamSpace(gpt2, include=("attn",)).P, dtype=torch.bool)),
        "PatchingResult": rc.patching_sweep(gpt2, pair),
        "PatchingResult (resid)": rc.patching_sweep(gpt2, pair, "resid"),
        "RestoreAblation": rc.restore_ablation(gpt2, bridges["tiny-gpt2"], space, DS, {"some": mask}, batch_size=8),
        "Evaluation": rc.evaluate(gpt2, gpt2.tokenizer, DS, batch_size=8),
        "Evaluation (QA only)": rc.evaluate(llama, llama.tokenizer, DS, batch_size=8, bio=False, max_people=1),
        "SharedCurve": rc.shared_curve(torch.rand(space.P, generator=torch.Generator().manual_seed(1)),
                                       torch.rand(space.P, generator=torch.Generator().manual_seed(2)), [10, 100]),
        # measured along a real run in test_consistency; here the type itself, with a phase that was not logged
        "ConsistencyAlong": rc.ConsistencyAlong([2, 4], ["bio", None], [0.25, 1 / 3], ["run/snapshots/step-2",
                                                                                      "run/model"]),
        # measured along a real run in test_training; here the type itself
        "LearningCurve": rc.LearningCurve("run", [2, 4], ["bio", None], ["run/snapshots/step-2", "run/model"],
                                          [rc.evaluate(llama, llama.tokenizer, DS, batch_size=8, bio=False).to_dict()
                                           for _ in range(2)]),
    }


@pytest.fixture(scope="module")
def results(bridges):
    return _results(bridges)


def test_every_result_is_a_frozen_typed_result(results):
    for name, r in results.items():
        assert isinstance(r, rc.Result) and type(r).__name__ == name.split(" ")[0]
        field = dataclasses.fields(r)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(r, field, None)


def test_save_load_round_trips_bit_for_bit(results, tmp_path):
    for name, r in results.items():
        out = r.save(tmp_path / name)
        back = type(r).load(out)
        assert back == r, name
        # and the files written again from the loaded result are the same bytes
        again = back.save(tmp_path / f"{name} again")
        for f in ("result.json", "result.safetensors"):
            if (out / f).exists():
                assert (out / f).read_bytes() == (again / f).read_bytes(), (name, f)


def test_trace_and_graft_round_trip_with_their_model(bridges, tmp_path):
    """The two results over a model's flat parameter layout load with the model, which must have that layout."""
    from recall_circuits.interventions.grafting import GraftConfig, GraftResult, graft

    model, other = bridges["tiny-neox"], bridges["tiny-gpt2"]
    trace = rc.cross_task_trace(model, DS, rc.TraceConfig(n_people=2))
    again = rc.TraceResult.load(trace.save(tmp_path / "t"), model)
    assert again == trace and isinstance(again, rc.Result)
    assert all(torch.equal(again.influence[k], trace.influence[k]) for k in ("bio", "qa"))
    assert again.per_head(50).equals(trace.per_head(50)) and again.top_heads(50, 2) == trace.top_heads(50, 2)
    g = graft(model, model, DS, GraftConfig(steps=2, eval_every=1, init_frac=1e-2))
    back = GraftResult.load(g.save(tmp_path / "g"), model)
    assert back == g and list(back.to_dataframe().columns) == ["val_acc", "size", "step"]
    with pytest.raises(RecallCircuitsError, match="another parameter layout"):
        GraftResult.load(tmp_path / "g", other)
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.alpha = 0.5


def test_equality_sees_a_changed_value(results):
    sweep = results["SingleHeadSweep"]
    grids = {k: v.clone() for k, v in sweep.grids.items()}
    grids["qa_id_acc"][1, 0] += 1e-6
    assert dataclasses.replace(sweep, grids=grids) != sweep
    assert dataclasses.replace(results["GradientConsistency"], overall=0.5) != results["GradientConsistency"]


def test_load_refuses_another_type_or_schema(results, tmp_path):
    out = results["RoleMasses"].save(tmp_path / "r")
    with pytest.raises(RecallCircuitsError, match="not HeadStats"):
        rc.HeadStats.load(out)
    meta = json.loads((out / "result.json").read_text())
    (out / "result.json").write_text(json.dumps({**meta, "schema_version": 99}))
    with pytest.raises(RecallCircuitsError, match="schema 99"):
        rc.RoleMasses.load(out)


def test_dataframes(results, bridges):
    L, H = bridges["tiny-gpt2"].cfg.n_layers, bridges["tiny-gpt2"].cfg.n_heads
    for name, r in results.items():
        df = r.to_dataframe()
        assert isinstance(df, pd.DataFrame) and len(df) > 0 or name == "HeadStats (attention only)", name
    heads = results["HeadStats"].to_dataframe()
    assert list(heads.columns) == ["layer", "head", "label", "value"] and len(heads) == L * H
    assert heads["value"].is_monotonic_decreasing and heads["value"].sum() == pytest.approx(
        results["HeadStats"].attn_total)
    roles = results["RoleMasses"].to_dataframe()
    assert len(roles) == 2 * 4 * L * H and set(roles["role"]) == {"subject", "relation", "first", "other"}
    abl = results["RestoreAblation"]
    assert list(abl.to_dataframe()["condition"]) == ["none", "some"]
    assert abl.scores["some"]["n_restored"] == int(_mask(ParamSpace(bridges["tiny-gpt2"])).sum()) > 0
    assert abl.scores["none"]["n_restored"] == 0
    sweep = results["SingleHeadSweep"].to_dataframe()
    assert sweep.query("layer == 0")["value"].isna().all() and sweep.query("layer == 1")["value"].notna().all()
    ev = results["Evaluation (QA only)"]
    assert set(ev.accuracy) == {"qa_id", "qa_ood"} and sum(ev.to_dataframe().query("attribute == 'all'")["n"]) == 12
    assert list(results["SharedCurve"].to_dataframe()["k"]) == [10, 100]
    p = results["PatchingResult"]
    df = p.to_dataframe()
    assert list(df.columns) == ["layer", "pos", "head", "label", "value", "restored"]
    assert len(df) == p.values.numel() and df["label"].iloc[0] == "L0H0"
