"""The presets' bfloat16 autocast only where the device computes bfloat16 natively: elsewhere float32 (emulated
bfloat16 on an AVX2-only CPU made a fine-tuning step many times slower), an explicit choice kept."""

import logging
from pathlib import Path

import pytest
import torch

from recall_circuits.training import presets
from recall_circuits.training.options import config_from_options

BASE = ["--strategy", "mixed", "--data", "D", "--out", "O"]


@pytest.mark.parametrize("native", [True, False])
def test_the_presets_bf16_follows_the_capability(native, monkeypatch, caplog):
    monkeypatch.setattr(presets, "native_bf16", lambda device: native)
    assert presets.TRAIN_PRESETS["cpu"]["bf16"]
    with caplog.at_level(logging.INFO):
        assert config_from_options(BASE)["bf16"] is native
    assert ("no native bfloat16" in caplog.text) is (not native)
    # what the user asks for is kept, either way, and nothing is said about the preset's choice
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert config_from_options([*BASE, "--bf16"])["bf16"] is True
    assert "no native bfloat16" not in caplog.text
    assert config_from_options([*BASE, "--dtype", "float32"])["bf16"] is False
    # the reproduction's recipes take the same preset (recorded in each run's identity: its options)
    from recall_circuits.runs.pipeline import _train_cfg

    assert _train_cfg(Path("o"), Path("d"), "mixed", "cpu", {"device": "cpu"})["bf16"] is native
    assert _train_cfg(Path("o"), Path("d"), "mixed", "cpu", {"device": "cpu", "bf16": True})["bf16"] is True


def test_native_bf16_reads_the_cpu(monkeypatch):
    for avx512_bf16, amx, want in ((True, False, True), (False, True, True), (False, False, False)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v, raising=False)
        assert presets.native_bf16("cpu") is want
    assert presets.native_bf16("meta") is False
