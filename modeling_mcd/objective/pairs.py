# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Pair ids and anchor rows: which rows of a global batch take part in a term, and as what (docs/method.md §2,
"Pair ids"; §9, local loss).

Every training sample carries the id of its source (`data.ImageTextDataset`: a caption file's row gets the first row
that names the same image file, any other row its own index); the collator stacks them to `pair_ids` (B,), the objective
gathers them over the processes, and every contrastive and distillation term of `modeling_mcd.objective.losses` reads
them: two rows with one id are never a negative of each other (a duplicated row, two captions of one image), and a row
with the id `PADDING_PAIR_ID` is a placeholder (a sample found unreadable when decoded) that takes no part in any term.
Without pair ids every row is its own pair.

Anchor rows (R,) select the rows whose terms one call computes, against every row as the other side (the local
loss); the normalisers here (`real_row_count`, `negative_pair_count`) are those of the WHOLE batch, so that the
terms of a partition of the anchors add up to the term over all of them.
"""

from __future__ import annotations

import torch

#: The pair id of a placeholder row (a sample skipped while decoding): it takes no part in any term.
PADDING_PAIR_ID = -1


def checked_pair_ids(pair_ids: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor | None:
    """`pair_ids` on `device`, checked to hold one id per row of a batch of `n` (`None` stays `None`)."""
    if pair_ids is not None and tuple(pair_ids.shape) != (n,):
        raise ValueError(f"pair_ids must have shape ({n},), one id per row, got {tuple(pair_ids.shape)}")
    return None if pair_ids is None else pair_ids.to(device)


def same_pair_mask(pair_ids: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) ids -> (N, N) bool: rows i and j come from the same pair (i == j included), or either is a placeholder:
    the pairs (i, j) where j may not be a negative of i. With `rows` (R,), a subset of the anchors i (the local
    loss, `modeling_mcd.objective.losses`): only those rows of the mask, (R, N)."""
    padding = pair_ids < 0  # (N,)
    anchor_ids = rows_of(pair_ids, rows)  # (R,)
    return (anchor_ids[:, None] == pair_ids[None, :]) | (anchor_ids < 0)[:, None] | padding[None, :]


def negative_pair_count(pair_ids: torch.Tensor) -> torch.Tensor:
    """The number of ordered pairs (i, j) that may be negatives of each other (the False entries of
    `same_pair_mask(pair_ids)`: both rows real, of different ids), counted from the ids' multiplicities without
    building the (N, N) mask: R² − Σ_id c_id² for R real rows and c_id rows per id. A 0-dim long tensor."""
    real = pair_ids[pair_ids >= 0]  # (R,)
    counts = torch.unique(real, return_counts=True)[1]  # (distinct ids,)
    return real.numel() ** 2 - (counts**2).sum()


def check_embeddings(**named: torch.Tensor) -> None:
    """Raise unless every named tensor is (N, D) with the same N and D."""
    shapes = {name: tuple(t.shape) for name, t in named.items()}
    if any(len(s) != 2 for s in shapes.values()) or len(set(shapes.values())) != 1:
        raise ValueError(f"expected embeddings of one shape (N, D), got {shapes}")


def checked_anchor_rows(anchor_rows: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor | None:
    """`anchor_rows` on `device`, checked to be a 1-D integer index into a batch of `n` rows (`None` stays `None`)."""
    if anchor_rows is None:
        return None
    if anchor_rows.ndim != 1 or anchor_rows.dtype.is_floating_point or anchor_rows.dtype == torch.bool:
        raise ValueError(f"anchor_rows must be a 1-D integer index into the {n} rows, got {anchor_rows!r}")
    return anchor_rows.to(device)


def rows_of(x: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """The anchor rows of `x` (N, ...) -> (R, ...); `x` itself without `rows`."""
    return x if rows is None else x[rows]


def real_row_count(pair_ids: torch.Tensor | None, n: int, like: torch.Tensor) -> torch.Tensor:
    """The number of real (non-placeholder) rows of the whole batch, at least 1: a mean's normaliser."""
    count = torch.tensor(n) if pair_ids is None else (pair_ids >= 0).sum()
    return count.clamp(min=1).to(like)


def zero_loss(like: torch.Tensor) -> torch.Tensor:
    """0, connected to the graph of `like`: the value of a term with nothing to average over (only placeholders)."""
    return like.sum() * 0.0


__all__ = [
    "PADDING_PAIR_ID",
    "check_embeddings",
    "checked_anchor_rows",
    "checked_pair_ids",
    "negative_pair_count",
    "real_row_count",
    "rows_of",
    "same_pair_mask",
    "zero_loss",
]
