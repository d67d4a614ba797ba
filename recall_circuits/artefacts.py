"""Run directories: ``config.json`` (resolved config + versions + checkpoint identities), tensors as safetensors,
``summary.json`` and self-contained HTML figures. Never pickled."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recall_circuits.errors import RecallCircuitsError
from recall_circuits.files import CONFIG_FILE, FIGURES_DIR, RUN_SCHEMA_VERSION, SUMMARY_FILE, TENSORS_FILE

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


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


def model_identity(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint's identity by content: the SHA-256 of each of its safetensors files (the folder it lies in is
    not part of it)."""
    p = Path(path)
    files = sorted(p.glob("*.safetensors"))
    if not files:
        raise RecallCircuitsError(f"{p} holds no safetensors weights")
    out = {}
    for f in files:
        with open(f, "rb") as fh:
            out[f.name] = hashlib.file_digest(fh, "sha256").hexdigest()
    return {"sha256": out}


def _first_difference(old: Any, new: Any, path: str = "") -> tuple[str, Any, Any] | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            d = _first_difference(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
            if d:
                return d
        return None
    return None if old == new else (path, old, new)


def difference(recorded: dict[str, Any] | None, current: dict[str, Any]) -> str | None:
    """The first key (dotted path) where ``recorded`` and ``current`` differ, ``identity`` if nothing was recorded,
    or None when they agree."""
    if recorded is None:
        return "identity"
    d = _first_difference(recorded, current)
    return d[0] if d else None


def check_same(recorded: dict[str, Any] | None, current: dict[str, Any], where: str | os.PathLike[str]) -> None:
    """Refuse, in one line naming the first thing that differs, to reuse work in ``where`` that was computed from
    other inputs than ``current`` (an identity recorded as None, by an older version, counts as different)."""
    d = _first_difference(recorded, current) if recorded is not None else ("identity", "not recorded", "recorded")
    if d:
        key, old, new = d
        show = lambda v: (str(v)[:60] + "…") if len(str(v)) > 60 else str(v)  # noqa: E731
        raise RecallCircuitsError(f"{where} was computed from a different {key} ({show(old)} there, {show(new)} "
                                  "now): pass --overwrite to recompute it, or choose another --out")


# modules that only read finished stages to write a run's summary.json and report.html (rewritten on every
# invocation, never cached in a stage): changing them changes no stage's result
PRESENTATION = ("runs/report.py", "runs/verdicts.py", "runs/summary.py")


def code_identity(root: str | os.PathLike[str] | None = None) -> str:
    """SHA-256 over the library's source files (their paths inside the package ``root``, by default this one, and
    their bytes) but the :data:`PRESENTATION` modules: the code an analysis stage was computed with.
    Documentation, tests, scripts and the report's presentation do not change it."""
    root = Path(root) if root is not None else Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        if f.relative_to(root).as_posix() in PRESENTATION:
            continue
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def _git_hash() -> str | None:
    try:
        root = Path(__file__).resolve().parents[1]
        return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# what a run directory of ours holds: these files and folders, JSON and safetensors artefacts, half-written ones
_OURS_DIRS = (FIGURES_DIR,)
_OURS_SUFFIXES = (".json", ".safetensors", ".partial", ".html")


def foreign_entries(out: Path, own: tuple[str, ...] = ()) -> list[str]:
    """The entries of ``out`` that no run of this library writes (a subfolder other than figures and the run's
    ``own``, a file of another kind)."""
    return sorted(e.name for e in out.iterdir()
                  if (e.is_dir() and e.name not in (*_OURS_DIRS, *own))
                  or (e.is_file() and not e.name.endswith(_OURS_SUFFIXES)))


def check_run_dir(out: str | os.PathLike[str], *, overwrite: bool = False, own: tuple[str, ...] = ()) -> None:
    """Refuse ``out`` before any work when it holds a complete run (unless ``overwrite``) or anything a run of this
    library does not write (always: ``overwrite`` replaces a run directory of ours, never another folder). An
    empty or absent folder, or an interrupted run of ours (``config.json`` without ``summary.json``), is fine: the
    run is redone there. ``own``: the subfolders this kind of run writes besides ``figures``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RecallCircuitsError(f"run directory {out} is a file")
    if not out.exists() or not any(out.iterdir()):
        return
    foreign = foreign_entries(out, own)
    if not (out / CONFIG_FILE).is_file() or foreign:
        what = (f"holds {', '.join(foreign[:3])}{' …' if len(foreign) > 3 else ''}" if foreign
                else f"has no {CONFIG_FILE}")
        raise RecallCircuitsError(f"{out} is not a run directory of this command ({what}): choose another --out "
                                  "(--overwrite replaces only a run directory written by this command)")
    if (out / SUMMARY_FILE).exists() and not overwrite:
        raise RecallCircuitsError(f"run directory {out} holds a complete run (pass --overwrite to recompute it)")


def reuse_or_check(out: str | os.PathLike[str], config: dict[str, Any], *, overwrite: bool = False,
                   checkpoints: dict[str, str] | None = None) -> dict[str, Any] | None:
    """Before any work: the summary of a complete run in ``out`` that was computed from the same ``config``,
    checkpoints (``checkpoints``: name -> folder, by :func:`checkpoint_identity`) and library code, to report and
    reuse; None when the run is to be computed there (``out`` absent, empty, an interrupted run, or ``overwrite``).
    A complete run from other inputs is refused in one line naming the first difference; a folder that is not a run
    directory of ours is refused (:func:`check_run_dir`) whatever ``overwrite`` says."""
    out = Path(out)
    check_run_dir(out, overwrite=True)
    if overwrite or not (out / SUMMARY_FILE).is_file():
        return None
    meta = read_json(out / CONFIG_FILE)
    current = {"config": json.loads(json.dumps(config, default=str)), "code": code_identity(),
               "checkpoints": {k: checkpoint_identity(v) for k, v in (checkpoints or {}).items()}}
    check_same({k: meta.get(k) for k in current}, current, out)
    log.info("%s holds this run, complete: reused (--overwrite computes it again)", out)
    return load_summary(out)


def check_input_run(run: str | os.PathLike[str], what: str, checkpoints: dict[str, str]) -> dict[str, Any]:
    """An input run directory (``--trace-dir``, ``--graft-dir``, ...) checked against what it claims to be: complete
    (its ``config.json`` and ``summary.json`` whole JSON) and computed from the same checkpoints (name -> folder)
    as the run that reads it; a one-line error naming what differs. Returns its ``config.json``."""
    run = Path(run)
    if not (run / CONFIG_FILE).is_file() or not (run / SUMMARY_FILE).is_file():
        raise RecallCircuitsError(f"{run} is not a complete {what} run directory (no {CONFIG_FILE} or {SUMMARY_FILE})")
    meta = read_json(run / CONFIG_FILE)
    read_json(run / SUMMARY_FILE)
    recorded = meta.get("checkpoints") or {}
    for name, folder in checkpoints.items():
        if name not in recorded:
            continue
        mine, theirs = checkpoint_identity(folder)["files"], recorded[name].get("files")
        if mine != theirs:
            raise RecallCircuitsError(f"{run} ({what}) was computed on another {name} model "
                                      f"({recorded[name].get('path')}, not {Path(folder).resolve()}): compute it on "
                                      "this run's models")
    return meta


def start_run(out: str | os.PathLike[str], config: dict[str, Any], *, overwrite: bool = False,
              checkpoints: dict[str, str] | None = None, own: tuple[str, ...] = ()) -> Path:
    """Create the run directory and write ``config.json`` (:func:`check_run_dir` decides whether ``out`` may be
    used; an interrupted run there is removed and redone)."""
    out = Path(out)
    check_run_dir(out, overwrite=overwrite, own=own)
    if out.exists() and any(out.iterdir()):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"schema_version": RUN_SCHEMA_VERSION, "config": config,
            "versions": {p: _version(p) for p in ("recall_circuits", "transformer-lens", "torch", "transformers")},
            "git": _git_hash(), "code": code_identity(),
            "checkpoints": {k: checkpoint_identity(v) for k, v in (checkpoints or {}).items()}}
    write_json(out / CONFIG_FILE, meta, indent=2, sort_keys=True, default=str)
    return out


def read_json(path: str | os.PathLike[str]) -> Any:
    """A JSON artefact; a missing or corrupted file is a one-line :class:`RecallCircuitsError` naming it."""
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RecallCircuitsError(f"{p} is missing") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecallCircuitsError(f"{p} is corrupted ({exc}); remove its run directory to recompute it") from exc


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write a text file under a temporary name in the same folder, then rename it: never half-written."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.partial")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, p)


def write_json(path: str | os.PathLike[str], obj: Any, **kwargs: Any) -> None:
    """Write JSON atomically (:func:`write_text_atomic`)."""
    write_text_atomic(path, json.dumps(obj, **kwargs))


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """A fresh ``<dest>.partial`` folder to write into; when the block ends without an error it replaces ``dest``,
    so ``dest`` is always complete or absent (an interrupted write leaves only the ``.partial`` folder, cleared the
    next time)."""
    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    yield tmp
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)


def save_tensors(out: Path, tensors: dict[str, torch.Tensor], name: str = TENSORS_FILE) -> None:
    """Write ``tensors`` as safetensors under a temporary name, then rename: the file is complete or absent."""
    from safetensors.torch import save_file  # noqa: PLC0415  (torch loads only when a tensor is written or read)

    tmp = Path(out) / (name + ".partial")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    tmp.replace(Path(out) / name)


def load_tensors(out: Path, name: str = TENSORS_FILE) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file  # noqa: PLC0415  (torch loads only when a tensor is written or read)

    return load_file(str(Path(out) / name))


def save_summary(out: Path, summary: dict[str, Any]) -> None:
    write_json(out / SUMMARY_FILE, {"schema_version": RUN_SCHEMA_VERSION, **summary}, indent=2, sort_keys=True,
               default=float)


def load_summary(out: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(out) / SUMMARY_FILE
    if not p.is_file():
        raise RecallCircuitsError(f"{out} is not a complete run directory (no {SUMMARY_FILE})")
    return read_json(p)


def save_figure(out: Path, fig: Any, name: str) -> Path:
    """A plotly figure as self-contained offline HTML (plotly.js inlined), and its JSON next to it (the report
    re-embeds figures from it)."""
    (out / FIGURES_DIR).mkdir(exist_ok=True)
    path = out / FIGURES_DIR / f"{name}.html"
    fig.write_html(str(path), include_plotlyjs=True, full_html=True)
    (out / FIGURES_DIR / f"{name}.json").write_text(fig.to_json(), encoding="utf-8")
    return path
