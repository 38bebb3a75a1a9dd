# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Tests of modeling_mcd.data.seeding.derive_seed, the one seed derivation of the data pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from modeling_mcd.data.seeding import derive_seed

KEYS = [(seed, epoch, index) for seed in range(3) for epoch in range(4) for index in range(50)]


def test_distinct_keys_give_distinct_seeds_and_their_order_counts():
    seeds = [derive_seed(*key) for key in KEYS]
    assert len(set(seeds)) == len(KEYS)
    # A linear mix (seed * p + epoch * q + index) would make these collide; a hash does not.
    assert derive_seed(1, 2, 3) != derive_seed(3, 2, 1)
    assert derive_seed(0, 1, 0) != derive_seed(0, 0, 1)


def test_a_fresh_process_derives_the_same_seeds():
    """What a resumed run, a DataLoader worker or another rank relies on: the seed depends on the keys alone, not on
    anything of the process (its hash seed, its global RNG states, its id)."""
    script = (
        "import json, sys; from modeling_mcd.data.seeding import derive_seed; "
        "print(json.dumps([derive_seed(*key) for key in json.loads(sys.argv[1])]))"
    )
    keys = KEYS[::7]
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(keys)], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout) == [derive_seed(*key) for key in keys]


def test_seeds_fit_the_generators_that_take_them():
    for key in KEYS[::11]:
        seed = derive_seed(*key)
        assert 0 <= seed < 2**32  # the documented range: one 32-bit word
        assert torch.Generator().manual_seed(seed).initial_seed() == seed


def test_negative_keys_are_rejected():
    with pytest.raises(ValueError):
        derive_seed(0, -1)
