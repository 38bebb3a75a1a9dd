# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Expected GPU memory per process for MCD pretraining under DeepSpeed ZeRO-2 and ZeRO-3 with bf16, computed from
the model's shapes (no GPU needed; the model is built on the meta device).

    python bench/memory_estimate.py                       # ViT-B/32 + BERT-base, batch 256 per GPU, 8 GPUs
    python bench/memory_estimate.py --batch 128 --gpus 16 --json out.json

Model states (mixed precision with AdamW): per trainable parameter 2 bytes of bf16 weights, 2 of bf16 gradients and
12 of fp32 master weights and Adam moments; ZeRO-2 partitions the gradients and optimizer states over the GPUs,
ZeRO-3 the weights too. The EMA teacher is 4 bytes (fp32) per parameter, partitioned under ZeRO-3 only.
Activations (bf16, no activation checkpointing) follow Korthikanti et al. 2022, "Reducing Activation Recomputation
in Large Transformer Models": s·b·h·(34 + 5·a·s/h) bytes per layer, for the student's two image views and the clean
and masked captions; the teacher runs without gradient and keeps no activations. Framework overhead (CUDA context,
allocator fragmentation, DeepSpeed buckets) is not counted: add 2-4 GB.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from modeling_mcd import MCDConfig
from modeling_mcd.pretraining.model import MCDForPreTraining

GIB = 1024**3


def _counts(config: MCDConfig) -> dict[str, int]:
    with torch.device("meta"):
        model = MCDForPreTraining(config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    teacher = sum(p.numel() for module in model.teacher_modules() for p in module.parameters())
    return {"trainable": trainable, "teacher": teacher}


def _activation_bytes(layers: int, seq: int, batch: int, hidden: int, heads: int) -> float:
    return layers * seq * batch * hidden * (34 + 5 * heads * seq / hidden)


def estimate(batch: int, gpus: int, text_length: int = 77) -> dict:
    """Bytes per GPU by component for ZeRO-2 and ZeRO-3 (see the module docstring)."""
    config = MCDConfig()
    counts = _counts(config)
    vision, text = config.vision_config, config.text_config
    patches = (vision.image_size // vision.patch_size) ** 2 + 1  # + [CLS]
    activations = _activation_bytes(
        vision.num_hidden_layers, patches, 2 * batch, vision.hidden_size, vision.num_attention_heads
    ) + _activation_bytes(text.num_hidden_layers, text_length, 2 * batch, text.hidden_size, text.num_attention_heads)
    states = counts["trainable"]
    result = {"parameters": counts, "batch_per_gpu": batch, "gpus": gpus, "activations_gib": activations / GIB}
    for stage, weights_sharded in ((2, False), (3, True)):
        weights = 2 * states / (gpus if weights_sharded else 1)
        grads_and_optimizer = (2 + 12) * states / gpus
        teacher = 4 * counts["teacher"] / (gpus if weights_sharded else 1)
        total = weights + grads_and_optimizer + teacher + activations
        result[f"zero{stage}_gib"] = {
            "weights": weights / GIB,
            "gradients_and_optimizer": grads_and_optimizer / GIB,
            "teacher_fp32": teacher / GIB,
            "activations": activations / GIB,
            "total": total / GIB,
        }
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256, help="images per GPU")
    parser.add_argument("--gpus", type=int, default=8, help="data-parallel processes")
    parser.add_argument(
        "--text-length", type=int, default=77, help="caption tokens (the YFCC15M recipe's max_seq_length)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    result = estimate(args.batch, args.gpus, args.text_length)
    counts = result["parameters"]
    print(f"ViT-B/32 + BERT-base: {counts['trainable'] / 1e6:.1f} M trainable, {counts['teacher'] / 1e6:.1f} M teacher")
    print(f"batch {args.batch} per GPU, {args.gpus} GPUs, bf16, GiB per GPU")
    print(f"{'':24}{'ZeRO-2':>10}{'ZeRO-3':>10}")
    for part in ("weights", "gradients_and_optimizer", "teacher_fp32", "activations", "total"):
        print(f"{part:24}{result['zero2_gib'][part]:10.2f}{result['zero3_gib'][part]:10.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
