"""The layout docs/architecture.md states, checked on the code: floors (no import points upward), stage runners only
in runs/stages/, no function over 60 lines but the listed exceptions, no ``model: Any`` in public signatures."""

import ast
import re
import shutil
from pathlib import Path

from helpers import ROOT

PACKAGE = ROOT / "recall_circuits"
DOC = ROOT / "docs" / "architecture.md"
MAX_LINES = 60


def floors(doc: Path = DOC) -> list[tuple[int, str]]:
    """(floor, path inside the package) for every path of the floors table."""
    rows = re.findall(r"^\|\s*(\d+)\s*\|[^|]*\|([^|]*)\|", doc.read_text(), re.M)
    return [(int(n), p) for n, paths in rows for p in re.findall(r"`([^`]+)`", paths)]


def floor_of(rel: str, table: list[tuple[int, str]]) -> int:
    """The floor of a module file (path inside the package): the longest matching path of the table."""
    if rel.endswith("/__init__.py") and rel != "__init__.py":
        rel = rel[: -len("__init__.py")]                   # a subpackage's __init__ is in its folder's floor
    hits = [(len(p), n) for n, p in table if rel == p or (p.endswith("/") and rel.startswith(p))]
    assert hits, f"{rel} is on no floor of docs/architecture.md"
    return max(hits)[1]


def _target(node: ast.ImportFrom | ast.Import, module: str, package: Path) -> list[str]:
    """The modules of this package an import statement names (a name imported from a package that is a module of
    it counts as that module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "recall_circuits"]
    base = node.module or ""
    if node.level:
        parts = module.split(".")[: -node.level]
        base = ".".join([*parts, base] if base else parts)
    if base.split(".")[0] != "recall_circuits":
        return []
    out = []
    for a in node.names:
        sub = f"{base}.{a.name}"
        out.append(sub if _file(sub, package) else base)
    return out


def _file(module: str, package: Path) -> Path | None:
    rel = Path(*module.split(".")[1:])
    for f in (package / rel.with_suffix(".py"), package / rel / "__init__.py"):
        if f.is_file():
            return f
    return None


def upward_imports(package: Path = PACKAGE, doc: Path = DOC) -> list[str]:
    """Every import, anywhere in a module, of a module on a higher floor: 'importer (floor) -> imported (floor)'."""
    table = floors(doc)
    bad = []
    for f in sorted(package.rglob("*.py")):
        rel = f.relative_to(package).as_posix()
        module = "recall_circuits." + rel[:-3].replace("/", ".").removesuffix(".__init__")
        mine = floor_of(rel, table)
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _target(node, module, package):
                    tf = _file(target, package)
                    if tf is None:
                        continue
                    theirs = floor_of(tf.relative_to(package).as_posix(), table)
                    if theirs > mine:
                        bad.append(f"{rel} ({mine}) -> {target} ({theirs}), line {node.lineno}")
    return bad


def test_the_table_covers_every_module_and_no_import_points_upward():
    table = floors()
    assert len({n for n, _ in table}) == 8 and ("runs/stages/", 5) in [(p, n) for n, p in table]
    for f in PACKAGE.rglob("*.py"):
        floor_of(f.relative_to(PACKAGE).as_posix(), table)
    assert upward_imports() == []


def test_an_upward_import_is_found(tmp_path):
    """The check fails when an upward import is added: at the top of a module, inside a function, or as a name
    imported from a package that is a module of it."""
    for added, rel in (("from recall_circuits.runs.pipeline import reproduce\n", "data/bios.py"),
                       ("def f():\n    from recall_circuits.runs.stages import heads\n", "interventions/restore.py"),
                       ("from recall_circuits import artefacts\nfrom recall_circuits.training import loop\n",
                        "models/params.py")):
        copy = tmp_path / rel.replace("/", "_") / "recall_circuits"
        shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
        (copy / rel).write_text((copy / rel).read_text() + "\n" + added)
        found = upward_imports(copy)
        assert len(found) == 1 and found[0].startswith(rel), found


def _functions(package: Path = PACKAGE):
    for f in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f.relative_to(package).as_posix(), node


def test_no_function_is_longer_than_the_limit_but_the_listed_exceptions():
    section = DOC.read_text().split("## Long functions", 1)[1]
    listed = set(re.findall(r"^\|\s*`([^`]+)`", section, re.M))
    long = {f"{rel}:{node.name}" for rel, node in _functions() if node.end_lineno - node.lineno + 1 > MAX_LINES}
    assert long <= listed, f"over {MAX_LINES} lines and not listed in docs/architecture.md: {sorted(long - listed)}"
    assert listed <= long, f"listed but no longer long (remove them): {sorted(listed - long)}"


def test_stage_runners_live_in_runs_stages():
    """Opening a run directory (start_run, reuse_or_check, save_summary) is what a stage does: only
    runs/stages/ (and the foundation that defines them) may call it."""
    for f in PACKAGE.rglob("*.py"):
        rel = f.relative_to(PACKAGE).as_posix()
        if rel.startswith("runs/stages/") or rel == "artefacts.py":
            continue
        calls = {n.func.id if isinstance(n.func, ast.Name) else getattr(n.func, "attr", "")
                 for n in ast.walk(ast.parse(f.read_text())) if isinstance(n, ast.Call)}
        assert not calls & {"start_run", "reuse_or_check", "save_summary", "open_run"}, rel


def test_no_public_signature_takes_a_model_as_any():
    bad = []
    for rel, node in _functions():
        if node.name.startswith("_") and node.name != "__init__":
            continue
        for a in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]:
            if a.arg in ("model", "ft", "base", "bridge", "pretrained", "finetuned") and a.annotation is not None \
                    and ast.unparse(a.annotation) == "Any":
                bad.append(f"{rel}:{node.name}({a.arg})")
    assert bad == []
