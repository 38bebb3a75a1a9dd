# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Exact global-batch collectives for the MCD losses (docs/method.md §Notation: every loss is computed over
the global batch, and its value must not depend on how that batch is split across processes).

Why `gather_with_grad` gives exact gradients under DDP / DeepSpeed:

1. Every rank gathers all student embeddings, so every rank computes the SAME global loss L.
2. The backward of the gather (`torch.distributed.nn.functional.all_gather`) sums the incoming
   gradients over ranks and hands each rank the rows it contributed. Since all W ranks hold the same
   L, each local embedding e receives W * dL/de.
3. The parameter gradient on a rank is therefore W * sum_{e local} dL/de * de/dθ, and DDP or
   DeepSpeed average parameter gradients over the W ranks: (1/W) * sum_ranks W * sum_{e local}
   dL/de * de/dθ = sum_{all e} dL/de * de/dθ = dL/dθ, exactly the 1-process gradient.

Parameters used outside the gather (e.g. `logit_scale`) get the full dL/dθ on every rank, and the average of W identical
values is dL/dθ again. `tests/test_distributed.py` and `tests/test_local_loss.py` check all of this with 2 gloo
processes against 1 process holding the whole batch.

With the local loss (`MCDLoss(local_loss=True)`, docs/method.md §9) rank r computes only its own anchors'
share L_r of L (Σ_r L_r = L) and back-propagates W · L_r: in step 2 each local embedding then receives
Σ_r W · dL_r/de = W * dL/de as above, and `logit_scale`'s W · dL_r/dθ average to dL/dθ
(`tests/test_local_loss.py`).

Every function is the identity (or a plain reduction) when `torch.distributed` is not initialised, so
the same code runs in a single process.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn


def world_info() -> tuple[int, int]:
    """Rank and world size of the default process group.

    Returns:
        `(rank, world_size)`; `(0, 1)` when `torch.distributed` is not available or not initialised.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def _check_equal_shapes(x: torch.Tensor, world_size: int) -> None:
    """Raise on every rank (no deadlock: all ranks see all shapes) unless all ranks hold the same shape.

    All-gather needs equal shapes; a silently padded or truncated gather would corrupt the loss.
    """
    shape = torch.tensor(x.shape, dtype=torch.long, device=x.device)  # (ndim,)
    shapes = [torch.empty_like(shape) for _ in range(world_size)]
    dist.all_gather(shapes, shape)
    if any(not torch.equal(s, shape) for s in shapes):
        per_rank = {rank: tuple(s.tolist()) for rank, s in enumerate(shapes)}
        raise ValueError(
            f"gather_with_grad needs the same local batch shape on every rank, got {per_rank} "
            "(rank: shape); use drop_last=True in the dataloader so every rank sees equal batches"
        )


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather along the batch dimension, keeping the autograd graph (see the module docstring).

    Args:
        x: (B_local, ...) local rows; B_local must be equal on every rank.

    Returns:
        (B_global, ...) rows of all ranks concatenated in rank order; gradients flow back to every
        rank's local rows (summed over ranks). `x` itself when not distributed.

    Raises:
        ValueError: the local shapes differ between ranks.
    """
    _, world_size = world_info()
    if world_size == 1:
        return x
    _check_equal_shapes(x, world_size)
    # torch 2.13 marks this deprecated in favour of the private `_functional_collectives` module; the
    # public autograd gather works on every backend (gloo included) for all supported torch versions.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional", category=FutureWarning)
        parts = dist_fn.all_gather(x)
    return torch.cat(parts, dim=0)


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather along the batch dimension without gradient (teacher embeddings).

    Args:
        x: (B_local, ...) local rows; B_local must be equal on every rank.

    Returns:
        (B_global, ...) detached rows of all ranks in rank order; `x.detach()` when not distributed.

    Raises:
        ValueError: the local shapes differ between ranks.
    """
    _, world_size = world_info()
    if world_size == 1:
        return x.detach()
    _check_equal_shapes(x, world_size)
    x = x.detach().contiguous()
    parts = [torch.empty_like(x) for _ in range(world_size)]
    dist.all_gather(parts, x)
    return torch.cat(parts, dim=0)


@torch.no_grad()
def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks without gradient (e.g. the global number of masked tokens).

    Args:
        x: any tensor, same shape on every rank.

    Returns:
        A new detached tensor holding the sum over ranks (`x.detach().clone()` when not distributed).
    """
    out = x.detach().clone()
    if world_info()[1] > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out
