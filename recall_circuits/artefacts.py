"""Run directories: ``config.json`` (resolved config + versions + checkpoint identities), tensors as safetensors,
``summary.json`` and self-contained HTML figures. Never pickled."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from recall_circuits.errors import RecallCircuitsError

SCHEMA_VERSION = 1
CONFIG_FILE, SUMMARY_FILE, TENSORS_FILE, FIGURES_DIR = "config.json", "summary.json", "result.safetensors", "figures"


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def checkpoint_identity(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Path, size and a hash of the first MiB of each safetensors file (fast, enough to tell checkpoints apart)."""
    p = Path(path)
    files = {}
    for f in sorted(p.glob("*.safetensors")):
        with open(f, "rb") as fh:
            files[f.name] = {"bytes": f.stat().st_size, "sha1_first_mib": hashlib.sha1(fh.read(1 << 20)).hexdigest()}
    return {"path": str(p.resolve()), "files": files}


def _git_hash() -> str | None:
    try:
        root = Path(__file__).resolve().parents[1]
        return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def start_run(out: str | os.PathLike[str], config: dict[str, Any], *, overwrite: bool = False,
              checkpoints: dict[str, str] | None = None) -> Path:
    """Create the run directory (refusing a non-empty one unless ``overwrite``) and write ``config.json``."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise RecallCircuitsError(f"run directory {out} exists and is not empty (pass --overwrite)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"schema_version": SCHEMA_VERSION, "config": config,
            "versions": {p: _version(p) for p in ("recall_circuits", "transformer-lens", "torch", "transformers")},
            "git": _git_hash(),
            "checkpoints": {k: checkpoint_identity(v) for k, v in (checkpoints or {}).items()}}
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    return out


def save_tensors(out: Path, tensors: dict[str, torch.Tensor], name: str = TENSORS_FILE) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(out / name))


def load_tensors(out: Path, name: str = TENSORS_FILE) -> dict[str, torch.Tensor]:
    return load_file(str(Path(out) / name))


def save_summary(out: Path, summary: dict[str, Any]) -> None:
    (out / SUMMARY_FILE).write_text(json.dumps({"schema_version": SCHEMA_VERSION, **summary}, indent=2,
                                               sort_keys=True, default=float))


def load_summary(out: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(out) / SUMMARY_FILE
    if not p.is_file():
        raise RecallCircuitsError(f"{out} is not a complete run directory (no {SUMMARY_FILE})")
    return json.loads(p.read_text())


def save_figure(out: Path, fig: Any, name: str) -> Path:
    """A plotly figure as self-contained offline HTML (plotly.js inlined), and its JSON next to it (the report
    re-embeds figures from it)."""
    (out / FIGURES_DIR).mkdir(exist_ok=True)
    path = out / FIGURES_DIR / f"{name}.html"
    fig.write_html(str(path), include_plotlyjs=True, full_html=True)
    (out / FIGURES_DIR / f"{name}.json").write_text(fig.to_json(), encoding="utf-8")
    return path
