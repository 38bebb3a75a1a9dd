#!/usr/bin/env bash
# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
#
# clip vs mcd on Flickr8k (clean splits) on a lent GPU: training/configs/flickr8k_gpu.yaml (ViT 64 px / patch 8 /
# 384 x 6 and BERT 256 x 4 from scratch, bf16, batch 512), seeds 0 and 1, each run capped at RUN_LIMIT seconds.
# Prepare here, then one call of the `device` tool:
#
#   bash bench/gpu_pack_data.sh && bash bench/gpu_wheels.sh
#   run(command="bash bench/gpu_quality.sh", carry=["gpu_data", ".whl"], timeout_s=560)
#
# Writes under $OUT (the device tool's output folder; /tmp/mcd-gpu-quality elsewhere): quality_flickr8k_gpu.json
# (commands, metrics, curves, mean ± std, paired differences), its PNG, env.txt and quality.log. Check it on a CPU
# first with a few steps: STEPS=2 BATCH=16 bash bench/gpu_quality.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/mcd-gpu-quality}
STEPS=${STEPS:-1000}
BATCH=${BATCH:-512}
SEEDS=${SEEDS:-2}
DATA=${GPU_DATA:-gpu_data}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/quality.log") 2>&1
source bench/gpu_env.sh
{ date -u; nvidia-smi 2>/dev/null || echo "no nvidia-smi"; $PY -c "import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.is_available())"; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
[ -f "$DATA/flickr8k/captions.jsonl" ] || { echo "no $DATA/flickr8k: run bash bench/gpu_pack_data.sh first"; exit 2; }
CPU_FLAGS=()
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || CPU_FLAGS=(--bf16 false --use_cpu true --dataloader_num_workers 0)
$PY bench/quality.py --data flickr8k_gpu --variants clip mcd --seeds "$SEEDS" --output "$OUT/runs" \
    --json "$OUT/quality_flickr8k_gpu.json" -- \
    --dataset "$DATA/flickr8k/captions.jsonl" --eval_retrieval_file "$DATA/flickr8k/captions.jsonl" \
    --eval_zero_shot_folder "$DATA/cifar10/test" --max_steps "$STEPS" --per_device_train_batch_size "$BATCH" \
    "${CPU_FLAGS[@]}"
echo "exit $?"
