# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""The one input conversion the `evaluate` modules share: a column of per-sample score rows to a matrix.

`evaluate` hands variable-length columns to `_compute` as Python lists (its `numpy` format takes only scalar
columns), so the rows are checked here before they become a tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def as_score_matrix(rows: Sequence[Sequence[float]], name: str = "predictions") -> torch.Tensor:
    r"""
    Stack the per-sample score rows that `evaluate` stored into one matrix, or raise `ValueError` naming the
    field.

    Args:
        rows (`Sequence[Sequence[float]]`): N rows of C scores each (lists, as `evaluate` returns a
            variable-length column).
        name (`str`, *optional*, defaults to `"predictions"`): the field, for error messages.

    Returns:
        `torch.FloatTensor` of shape `(N, C)` (float32, the stored precision), on CPU.
    """
    if len(rows) == 0:
        raise ValueError(f"no {name} were added: call add_batch or pass {name} to compute")
    lengths = [len(row) for row in rows]
    bad = next((i for i, length in enumerate(lengths) if length != lengths[0]), None)
    if bad is not None:
        raise ValueError(
            f"every row of {name} needs the same number of scores: row 0 has {lengths[0]}, row {bad} has {lengths[bad]}"
        )
    if lengths[0] == 0:
        raise ValueError(f"{name} rows hold no scores")
    return torch.tensor(rows, dtype=torch.float32)


__all__ = ["as_score_matrix"]
