# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""bench/memory_estimate.py: the README's memory table, from the model's shapes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "memory_estimate.py"
spec = importlib.util.spec_from_file_location("memory_estimate", SCRIPT)
memory_estimate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(memory_estimate)


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
