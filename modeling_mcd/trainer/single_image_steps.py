# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Optimizer steps whose global batch shows a single image: warned about once, counted and logged.

Rows with one pair id are never negatives of each other (`modeling_mcd.objective.pairs`). When every real row of a
step's global batch (all processes, all micro-batches of the accumulation) has the same id, or no row is real, there is
no negative at all: the contrastive terms and the distillation terms are 0 and only MLM trains. A dataset of one image
with many captions, or a sort by image with a small batch, does this at every step, silently. [`SingleImageSteps`]
records each micro-batch's smallest and largest real id on the device (no host synchronisation per step), and, when the
Trainer logs, gathers them over the processes once, counts the steps whose global batch had fewer than two distinct ids,
warns at the first one and adds the running count (`single_image_steps`) to the logs; the total is logged at the end.
"""

from __future__ import annotations

import torch
from transformers import TrainerCallback
from transformers.utils import logging

logger = logging.get_logger(__name__)

_NO_ID = torch.iinfo(torch.int64).max  # the smallest id of a batch without a real row


class SingleImageSteps(TrainerCallback):
    """Counts the optimizer steps whose global batch shows fewer than two distinct images (pair ids).

    Call [`observe`] with each training micro-batch's `pair_ids` and [`flush`] on every process where the Trainer
    logs (a collective); the end of training flushes too.

    Args:
        gather (`Callable`, *optional*): stacks the processes' tensors along dim 0 (`accelerator.gather`); `None` on
            one process.
    """

    def __init__(self, gather=None):
        self.gather = gather
        self.count = 0
        self.steps_seen = 0
        self._low: torch.Tensor | None = None  # this step's smallest real id, on the device
        self._high: torch.Tensor | None = None
        self._pending: list[tuple[int, torch.Tensor]] = []  # (step, [low, high]) not yet counted

    def observe(self, pair_ids: torch.Tensor | None) -> None:
        """Record one training micro-batch's pair ids (`None`: the batch has none, every row is its own pair)."""
        if pair_ids is None:
            return
        real = pair_ids >= 0
        low = torch.where(real, pair_ids, torch.full_like(pair_ids, _NO_ID)).min()
        high = torch.where(real, pair_ids, torch.full_like(pair_ids, -1)).max()
        self._low = low if self._low is None else torch.minimum(self._low, low)
        self._high = high if self._high is None else torch.maximum(self._high, high)

    def on_step_end(self, args, state, control, **kwargs):
        if self._low is not None:
            self._pending.append((state.global_step, torch.stack([self._low, -self._high])))
        self._low = self._high = None

    def flush(self) -> int:
        """Count the steps recorded since the last call (a collective with several processes); returns the running
        count."""
        if not self._pending:
            return self.count
        steps = [step for step, _ in self._pending]
        local = torch.stack([bounds for _, bounds in self._pending])  # (S, 2): low, -high
        self._pending.clear()
        bounds = local if self.gather is None else self.gather(local[None]).amin(dim=0)  # (S, 2) over the processes
        low, high = bounds[:, 0], -bounds[:, 1]
        single = ((high < 0) | (low == high)).tolist()  # the one host synchronisation of the logging interval
        for step, is_single in zip(steps, single):
            if not is_single:
                continue
            if self.count == 0:
                logger.warning(
                    "step %d: every row of the global batch shows one image (a single pair id): its contrastive and "
                    "distillation losses are 0, only MLM trains. Shuffle the data, or take a larger batch; such steps "
                    "are counted as single_image_steps",
                    step,
                )
            self.count += 1
        self.steps_seen += len(steps)
        return self.count

    def on_train_end(self, args, state, control, **kwargs):
        self.flush()
        if self.count:
            logger.warning(
                "%d of %d optimizer steps had a batch showing one image (their contrastive and distillation losses "
                "were 0)",
                self.count,
                self.steps_seen,
            )


__all__ = ["SingleImageSteps"]
