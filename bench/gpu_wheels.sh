#!/usr/bin/env bash
# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
#
# Run HERE (a machine with the package registry), once, before bench/gpu_check.sh: downloads, as wheels for the GPU
# image's Python 3.12, the packages that image lacks (kornia, datasets and their small dependencies) or holds at another
# version than this checkout's .venv (transformers), into .whl/ at the repository root, which it adds to
# .git/info/exclude (the `device` tool carries ignored paths only when `carry` names them). About 21 MB.
#
#   bash bench/gpu_wheels.sh
#   # then, with the device tool: run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=540)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
# The versions this checkout is developed and tested with.
PINS=$($PYTHON - <<'PY'
from importlib.metadata import version
names = ["transformers", "datasets", "dill", "multiprocess", "fsspec", "kornia", "kornia_rs"]
print(" ".join(f"{name}=={version(name)}" for name in names))
PY
)
mkdir -p .git/info
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl
# shellcheck disable=SC2086
$PYTHON -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $PINS
ls -l .whl && du -sh .whl
