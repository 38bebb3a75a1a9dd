# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
#
# Sourced by bench/gpu_check.sh and bench/gpu_quality.sh from the repository root: offline settings, the Python to
# use ($PY), and the wheels of .whl/ (bench/gpu_wheels.sh) installed beside the GPU image's packages, first on the
# path. Set OUT and the log redirection before sourcing.
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}
SITE=/tmp/mcd-site
if compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
        || echo "wheel install failed"
    export PYTHONPATH="$SITE:$PWD"
else
    echo "no .whl/: using the image's packages (run bench/gpu_wheels.sh here and carry .whl)"
    export PYTHONPATH="$PWD"
fi
