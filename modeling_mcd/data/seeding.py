# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""One way to derive a seed from integer keys, for every draw that must be reproducible on its own.

A draw keyed by what it is about (run seed, epoch, sample index, ...) rather than by how many draws came
before gives the same result after a resume, in any DataLoader worker and on any process.
"""

from __future__ import annotations

import numpy as np


def derive_seed(*keys: int) -> int:
    """A seed that is a pure function of `keys`: the first 32-bit word of `numpy.random.SeedSequence(keys)`.

    `SeedSequence` hashes its whole entropy, so keys that differ in any position, or in their order, give
    unrelated seeds (unlike a linear mix such as `a * p + b`, where distinct keys can collide). One caveat:
    `SeedSequence` pads its 4-word pool with zeros, so up to four keys, trailing zeros do not count
    (`derive_seed(1, 2) == derive_seed(1, 2, 0)`); give one use its keys in a fixed number and order.

    Args:
        keys (`int`): non-negative integers, e.g. `(run_seed, epoch, index)`; their order matters.

    Returns:
        `int` in `[0, 2**32)`: usable by `torch.Generator.manual_seed`, `numpy.random.default_rng` or as a
        draw itself (`derive_seed(...) % n`).

    Raises:
        ValueError: a key is negative (`SeedSequence` accepts only non-negative entropy).
    """
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


__all__ = ["derive_seed"]
