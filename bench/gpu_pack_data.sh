#!/usr/bin/env bash
# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
#
# Run HERE, once, before bench/gpu_quality.sh: copies the Flickr8k train and test images with their captions, and the
# CIFAR-10 test images, from ../shared/data into gpu_data/ at the repository root (added to .git/info/exclude: the
# `device` tool carries ignored paths only when `carry` names them). Val is left out to fit the 64 MiB carry: the GPU
# run's settings are the CPU recipe's, scaled, not chosen on val there. About 37 MB.
#
#   bash bench/gpu_pack_data.sh && bash bench/gpu_wheels.sh
#   # then: run(command="bash bench/gpu_quality.sh", carry=["gpu_data", ".whl"], timeout_s=560)
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${MCD_DATA:-../shared/data}
mkdir -p .git/info
grep -qxF '/gpu_data/' .git/info/exclude 2>/dev/null || echo '/gpu_data/' >> .git/info/exclude
rm -rf gpu_data && mkdir -p gpu_data/flickr8k/images gpu_data/cifar10
python3 - "$SRC/flickr8k" gpu_data/flickr8k <<'PY'
import json, shutil, sys
from pathlib import Path
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
kept = []
for line in (src / "captions.jsonl").read_text().splitlines():
    row = json.loads(line)
    if row["split"] in ("train", "test"):
        shutil.copy(src / row["file_name"], dst / row["file_name"])
        kept.append(line)
(dst / "captions.jsonl").write_text("\n".join(kept) + "\n")
print(f"flickr8k: {len(kept)} rows (train + test)")
PY
cp -r "$SRC/cifar10/test" gpu_data/cifar10/test
cp "$SRC"/cifar10/*.json gpu_data/cifar10/ 2>/dev/null || true
du -sh gpu_data
