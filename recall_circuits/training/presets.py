"""Named settings for data generation and fine-tuning.

``cpu`` is the default reproduction on ``smollm2-135m`` sized for 2 CPU cores; ``tiny`` runs the same code on the
tiny random models in seconds (tests, ``--quick``). The GPU presets document the paper-scale setting; their memory
and time figures in the README are estimates until measured on a GPU (no weights can be downloaded here).

The cpu numbers follow measurements on these machines (SmolLM2-135M, 100 people): batch 16 at lr 3e-4 memorised a
third of the attributes in ten epochs, batch 4 at lr 5e-4 memorised 92% — small batches, many steps.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from recall_circuits.errors import RecallCircuitsError

log = logging.getLogger(__name__)

# the same names as TRAIN_PRESETS: ``make_data.py --preset X`` makes the data ``finetune.py --preset X`` is for
DATA_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"n_people": 24, "seed": 0},
    "cpu": {"n_people": 100, "seed": 0},
    "gpu-llama3b": {"n_people": 10_000, "seed": 0},
    "gpu-pythia2.8b": {"n_people": 10_000, "seed": 0},
}

TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"model": "tiny-llama", "epochs": 3, "lr": 1e-3, "batch_size": 4, "checkpoint_every": 0,
             "eval_batch_size": 64, "snapshot_every": 12},
    # the regime search's pair A10 (regime.PRESET_PAIR): 40 passes, constant rate after a 3% warm-up, tied
    # embedding frozen; bfloat16 autocast (weights and optimiser in float32) where the search trained in float32
    "cpu": {"model": "smollm2-135m", "epochs": 40, "lr": 5e-4, "batch_size": 4, "warmup_frac": 0.03,
            "schedule": "constant", "freeze_embeddings": True, "bf16": True, "checkpoint_every": 200,
            "snapshot_every": 1000},
    "gpu-llama3b": {"model": "meta-llama/Llama-3.2-3B", "epochs": 10, "lr": 2e-5, "batch_size": 64, "bf16": True,
                    "gradient_checkpointing": True, "device": "cuda", "checkpoint_every": 500},
    "gpu-pythia2.8b": {"model": "EleutherAI/pythia-2.8b", "epochs": 10, "lr": 2e-5, "batch_size": 64, "bf16": True,
                       "gradient_checkpointing": True, "device": "cuda", "checkpoint_every": 500},
}

# QA-phase learning rates of the sensitivity table (cpu preset), fixed before any OOD number was seen.
# Kept as strings: they name the run directories (two-stage-qalr1.5e-4/, mixed-lr5e-5/).
SENSITIVITY_QA_LRS = ("5e-4", "1.5e-4", "5e-5")


def preset(table: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    if name not in table:
        raise RecallCircuitsError(f"unknown preset {name!r}; choose from {list(table)}")
    return dict(table[name])


def native_bf16(device: str) -> bool:
    """Whether ``device`` computes bfloat16 natively: a GPU that supports it, or a CPU with AVX-512 BF16 or AMX
    (without them bfloat16 autocast is emulated on a CPU, many times slower than float32)."""
    import torch  # noqa: PLC0415  (torch loads only when a tensor is made: this module is used without it)

    kind = device.split(":")[0]
    if kind == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if kind != "cpu":
        return False
    probes = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(p is None for p in probes):      # an older torch: the CPU's own flags
        try:
            flags = Path("/proc/cpuinfo").read_text().split()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags
    return any(bool(p()) for p in probes if p is not None)


def train_preset(name: str, device: str | None = None, bf16: bool | None = None) -> dict[str, Any]:
    """The fine-tuning preset ``name`` for ``device`` (default: the preset's): its bfloat16 autocast only where the
    device computes bfloat16 natively (:func:`native_bf16`), else float32, said in one log line. ``bf16``: the
    caller's explicit choice, kept as it is (nothing probed, nothing said)."""
    cfg = preset(TRAIN_PRESETS, name)
    if bf16 is not None:
        return cfg | {"bf16": bf16}
    dev = device or cfg.get("device", "cpu")
    if cfg.get("bf16") and not native_bf16(dev):
        log.info("preset %s: %s has no native bfloat16 (AVX-512 BF16 or AMX on a CPU): training in float32 "
                 "(--bf16 forces bfloat16)", name, dev)
        cfg["bf16"] = False
    return cfg
