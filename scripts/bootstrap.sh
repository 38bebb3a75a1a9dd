#!/usr/bin/env bash
# Create ./.venv and install mcd with everything its training, tests and DeepSpeed runs need.
# Idempotent: re-running after a change to setup.cfg reinstalls; otherwise it returns at once.
#
# Order matters: torch first (2.13.0 is the CPU wheel this machine serves locally; a bare `torch`
# requirement would pull gigabytes of CUDA), then the package, then DeepSpeed, which ships as an
# sdist and must build against the torch already installed (--no-build-isolation).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${MCD_TORCH_SPEC:-torch==2.13.0}"
VENV=.venv
STAMP="$VENV/.mcd-installed"
WANT="$(cat setup.cfg pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1) $TORCH_SPEC"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip
"${PIP[@]}" install "$TORCH_SPEC"
"${PIP[@]}" install -e ".[dev]"
"${PIP[@]}" install --no-build-isolation "deepspeed>=0.15"
echo "$WANT" > "$STAMP"
echo "mcd installed in $VENV"
