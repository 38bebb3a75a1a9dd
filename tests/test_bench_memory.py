# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""bench/memory_estimate.py: the README's memory table, from the model's shapes."""

from __future__ import annotations

import pytest
from test_bench_step import load_bench

memory_estimate = load_bench("memory_estimate")


def test_estimate_follows_the_shapes_and_the_zero_stages():
    result = memory_estimate.estimate(batch=256, gpus=8)
    counts = result["parameters"]
    # ViT-B/32 (~88 M) + BERT-base (~110 M) + projections and the MLM head; the teacher is the ViT + projection.
    assert 190e6 < counts["trainable"] < 210e6 and 85e6 < counts["teacher"] < 92e6
    zero2, zero3 = result["zero2_gib"], result["zero3_gib"]
    gib = 1024**3
    assert zero2["weights"] == pytest.approx(2 * counts["trainable"] / gib)
    assert zero3["weights"] == pytest.approx(zero2["weights"] / 8)
    assert zero2["teacher_fp32"] == pytest.approx(4 * counts["teacher"] / gib)
    assert zero3["total"] < zero2["total"]
    for stage in (zero2, zero3):
        parts = ("weights", "gradients_and_optimizer", "teacher_fp32", "activations")
        assert stage["total"] == pytest.approx(sum(stage[part] for part in parts))
    half = memory_estimate.estimate(batch=128, gpus=8)
    assert half["activations_gib"] == pytest.approx(result["activations_gib"] / 2)  # linear in the batch


def test_zero3_partitions_the_weights_and_the_teacher_zero2_only_the_optimizer():
    eight, sixteen = memory_estimate.estimate(batch=256, gpus=8), memory_estimate.estimate(batch=256, gpus=16)
    for part in ("weights", "teacher_fp32"):
        assert sixteen["zero2_gib"][part] == pytest.approx(eight["zero2_gib"][part])  # a whole copy on every GPU
        assert sixteen["zero3_gib"][part] == pytest.approx(eight["zero3_gib"][part] / 2)
    for stage in ("zero2_gib", "zero3_gib"):
        assert sixteen[stage]["gradients_and_optimizer"] == pytest.approx(eight[stage]["gradients_and_optimizer"] / 2)
        assert sixteen[stage]["activations"] == pytest.approx(eight[stage]["activations"])  # the batch is per GPU
