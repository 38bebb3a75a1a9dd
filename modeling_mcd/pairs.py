# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Pair ids: which rows of a global batch show the same image (docs/method.md §2, "Pair ids").

Every training sample carries the id of its source (`data.ImageTextDataset`: a caption file's row gets the first
row that names the same image file, any other row its own index); the collator stacks them to `pair_ids` (B,), the
objective gathers them over the processes, and every contrastive and distillation term of `modeling_mcd.losses`
reads them: two rows with one id are never a negative of each other (a duplicated row, two captions of one image),
and a row with the id `PADDING_PAIR_ID` is a placeholder (a sample found unreadable when decoded) that takes no part
in any term. Without pair ids every row is its own pair.
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


def same_pair_mask(pair_ids: torch.Tensor) -> torch.Tensor:
    """(N,) ids -> (N, N) bool: rows i and j come from the same pair (i == j included), or either is a placeholder:
    the pairs (i, j) where j may not be a negative of i."""
    padding = pair_ids < 0
    return (pair_ids[:, None] == pair_ids[None, :]) | padding[:, None] | padding[None, :]


def zero_loss(like: torch.Tensor) -> torch.Tensor:
    """0, connected to the graph of `like`: the value of a term with nothing to average over (only placeholders)."""
    return like.sum() * 0.0


__all__ = ["PADDING_PAIR_ID", "checked_pair_ids", "same_pair_mask", "zero_loss"]
