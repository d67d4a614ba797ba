"""Check that requirements.lock pins every package exactly and satisfies pyproject.toml's ranges.

    python scripts/check_lock.py              # the lock against pyproject.toml (run by .ci/run)
    python scripts/check_lock.py --installed  # also: the running environment holds exactly the locked versions

Exits 1 with one line per problem.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def read_lock(path: Path) -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not version:
            raise SystemExit(f"{path.name}:{n}: not an exact pin: {line!r}")
        pins[canonicalize_name(name)] = Version(version)
    return pins


def problems(installed: bool) -> list[str]:
    pins = read_lock(ROOT / "requirements.lock")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *(d for ds in project.get("optional-dependencies", {}).values() for d in ds)]
    out = []
    for spec in wanted:
        req = Requirement(spec)
        pin = pins.get(canonicalize_name(req.name))
        if pin is None:
            out.append(f"{req.name}: required by pyproject.toml, absent from requirements.lock")
        elif not req.specifier.contains(pin, prereleases=True):
            out.append(f"{req.name}: locked at {pin}, outside pyproject.toml's range {req.specifier}")
    if installed:
        for name, pin in pins.items():
            try:
                have = Version(metadata.version(name))
            except metadata.PackageNotFoundError:
                out.append(f"{name}: locked at {pin}, not installed")
                continue
            if have != pin:
                out.append(f"{name}: locked at {pin}, installed {have}")
    return out


def main() -> int:
    found = problems("--installed" in sys.argv[1:])
    for p in found:
        print(f"check_lock: {p}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
