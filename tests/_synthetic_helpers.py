# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""The configuration and scenes shared by the tests of modeling_mcd.synthetic (test_synthetic_*.py)."""

from __future__ import annotations

from modeling_mcd.synthetic import SyntheticConfig, render_sample

# Odd sizes on purpose: 45 px images, 4 objects at most, 3 captions each.
TINY = SyntheticConfig(
    image_size=45, num_train=7, num_validation=3, num_test=5, max_objects=4, captions_per_image=3, seed=11
)


def scenes(config: SyntheticConfig = TINY, count: int = 40) -> list[dict]:
    return [render_sample(config, "train", index) for index in range(count)]
