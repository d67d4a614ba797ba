#!/usr/bin/env bash
# Move requirements.lock to the newest releases that pyproject.toml's ranges admit (torch stays at the local CPU
# wheel, 2.13.0): resolve in a throw-away virtual environment, freeze it, check it against pyproject.toml.
# Then run `bash scripts/bootstrap.sh && .venv/bin/python -m pytest -q` and commit the lock only if it passes.
#   bash scripts/lock.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PYTHON" -m venv "$tmp/venv"
PIP="$tmp/venv/bin/python -m pip --disable-pip-version-check"
$PIP install -q "torch==2.13.0"
$PIP install -q ".[test]" "setuptools>=68"
$PIP freeze --all --exclude recall_circuits --exclude pip | sort -f > "$tmp/lock"
{ echo "# The exact set the test suite passed with (bash scripts/lock.sh writes it; bootstrap.sh installs it)."
  cat "$tmp/lock"; } > requirements.lock
"$tmp/venv/bin/python" scripts/check_lock.py
echo "requirements.lock: $(grep -c '==' requirements.lock) packages; now run the tests before committing it"
