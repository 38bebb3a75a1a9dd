# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Tests of modeling_mcd.seeding.derive_seed, the one seed derivation of the data pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from modeling_mcd.seeding import derive_seed


def test_derive_seed_is_a_deterministic_hash_of_the_ordered_keys():
    keys = [(seed, epoch, index) for seed in range(3) for epoch in range(4) for index in range(50)]
    seeds = [derive_seed(*key) for key in keys]
    assert seeds == [derive_seed(*key) for key in keys]  # deterministic
    assert len(set(seeds)) == len(keys)  # distinct keys, distinct seeds
    assert all(isinstance(seed, int) and 0 <= seed < 2**32 for seed in seeds)
    assert derive_seed(1, 2, 3) != derive_seed(3, 2, 1)  # the order of the keys counts
    # The formula select_caption and the MLM-mask seeding used before it had a name: same numbers.
    assert seeds[77] == int(np.random.SeedSequence(list(keys[77])).generate_state(1)[0])
    with pytest.raises(ValueError):
        derive_seed(0, -1)
