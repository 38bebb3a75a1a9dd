#!/usr/bin/env bash
# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
#
# The one prepared command for a lent GPU machine (README "Performance"). From the repository root:
#
#   bash bench/gpu_wheels.sh                                  # here, once: wheels the GPU image lacks, into .whl/
#   run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=540)     # the `device` tool
#
# Within about 8 minutes of a warm machine (each part has its own time limit, and a failed part does not stop the
# others) it writes under $OUT (the device tool's output folder; /tmp/mcd-gpu-out elsewhere), 6 files:
#   env.txt         nvidia-smi, Python and package versions
#   smoke.json      bench/step.py --device cuda --tiny: the CUDA code path runs at all (seconds)
#   gpu.json        bench/gpu.py: ViT-B/32 @ 224 + BERT-base, bf16, batch 256: samples/s, MFU, peak memory, largest batch
#   step_cuda.json  bench/step.py --device cuda --probes: every variant, mcd/clip vs the FLOP ratio, clip/peer, and
#                   the parts of an mcd step (views, teacher under no_grad / inference_mode, EMA, NaN guard)
#   tests.log       the bench tests and the tests of the code a GPU run leans on (views, objective in bf16, teacher,
#                   pretraining model) with the GPU image's packages; they run on its CPU: the suite has no CUDA test
#   check.log       everything printed, with each part's exit status
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/mcd-gpu-out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/check.log") 2>&1
source bench/gpu_env.sh

part() {  # part NAME SECONDS COMMAND...: run with a time limit, report its status, go on
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit}s): $*"
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@"
    echo "=== $name: exit $? after $((SECONDS - start)) s"
}

{
    date -u
    nvidia-smi
    $PY -c "import sys, torch; print(sys.version); print('torch', torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"
    $PY -c "
from importlib.metadata import version
for name in ('transformers', 'accelerate', 'datasets', 'kornia', 'tokenizers', 'huggingface_hub', 'peft'):
    try:
        print(name, version(name))
    except Exception as error:
        print(name, 'missing', error)"
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

part smoke 60 $PY bench/step.py --device cuda --tiny --json "$OUT/smoke.json"
part gpu 200 $PY bench/gpu.py --json "$OUT/gpu.json"
part step 150 $PY bench/step.py --device cuda --probes --json "$OUT/step_cuda.json"
part tests 90 $PY -m pytest -q -p no:cacheprovider tests/test_bench_step.py tests/test_bench_gpu.py \
    tests/test_augmentation.py tests/test_objective.py tests/test_teacher.py tests/test_pretraining.py \
    2>&1 | tee "$OUT/tests.log"
echo "=== done: $(ls "$OUT")"
