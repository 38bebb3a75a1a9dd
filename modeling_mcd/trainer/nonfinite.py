# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Optimizer steps with a non-finite loss or gradient are skipped, not applied.

One NaN gradient (a degenerate batch, an overflow in a long run) applied by AdamW makes every weight NaN, and the
run continues, uselessly, to its end. `NonFiniteStepGuard` checks the gradients before each optimizer step (through the
total gradient norm the Trainer computes anyway, when it hands it over): a step
with an inf or NaN is skipped, counted and logged with its step, through the same flag accelerate sets when fp16's
gradient scaler skips a step (`AcceleratedOptimizer._is_overflow`), so the learning-rate schedule and the EMA teacher
(`TeacherEMACallback`) stay put too. After `max_in_a_row` skipped steps in a row the run stops with an error; the
last checkpoint written before is complete (`modeling_mcd.trainer.checkpoints`) and holds no NaN.

Under DeepSpeed the optimizer is DeepSpeed's (its fp16 loss scaler skips overflowing steps itself); the guard then
does nothing.
"""

from __future__ import annotations

import math

import torch
from transformers import TrainerCallback
from transformers.utils import logging

logger = logging.get_logger(__name__)


class NonFiniteStepGuard(TrainerCallback):
    r"""
    Skip optimizer steps whose gradients are not finite; stop after `max_in_a_row` of them in a row.

    Args:
        max_in_a_row (`int`): consecutive skipped steps that stop the run.
    """

    def __init__(self, max_in_a_row: int):
        if max_in_a_row < 1:
            raise ValueError(f"max_in_a_row must be positive, got {max_in_a_row}")
        self.max_in_a_row = max_in_a_row
        self.skipped_steps: list[int] = []  # global step numbers (1-based) of the skipped steps
        self.in_a_row = 0
        self._step = 0
        self._grad_norm: torch.Tensor | float | None = None

    def use_grad_norm(self, grad_norm: torch.Tensor | float | None) -> None:
        """The step's total gradient norm, as the Trainer computed it for clipping and logging, before the optimizer
        step. A norm is non-finite exactly when some gradient entry is, so the guard reads it instead of taking norms
        of its own: one pass over every gradient less per step. Without it the guard computes them."""
        self._grad_norm = grad_norm

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        from accelerate.optimizer import AcceleratedOptimizer

        if not isinstance(optimizer, AcceleratedOptimizer) or hasattr(optimizer, "_mcd_guarded"):
            return
        apply = optimizer.step

        def guarded_step(closure=None):
            norm, self._grad_norm = self._grad_norm, None  # this step's, used once
            finite = _all_finite(optimizer.optimizer) if norm is None else math.isfinite(float(norm))
            if finite:
                optimizer._is_overflow = False
                self.in_a_row = 0
                return apply(closure) if closure is not None else apply()
            optimizer._is_overflow = True  # what accelerate reports as `optimizer_step_was_skipped`
            self.in_a_row += 1
            self.skipped_steps.append(self._step)
            logger.warning(
                "step %d: non-finite loss or gradients; the optimizer step is skipped (%d in a row, %d in all)",
                self._step,
                self.in_a_row,
                len(self.skipped_steps),
            )
            return None

        # The scheduler wrapped the optimizer's step to check the call order; keep its mark (the order is unchanged).
        if hasattr(apply, "_wrapped_by_lr_sched"):
            guarded_step._wrapped_by_lr_sched = apply._wrapped_by_lr_sched
        optimizer.step = guarded_step
        optimizer._mcd_guarded = True

    def on_step_begin(self, args, state, control, **kwargs):
        self._step = state.global_step + 1

    def on_step_end(self, args, state, control, **kwargs):
        if self.in_a_row >= self.max_in_a_row:
            first = self.skipped_steps[-self.in_a_row]
            raise RuntimeError(
                f"{self.in_a_row} optimizer steps in a row (steps {first} to {state.global_step}) had non-finite loss "
                f"or gradients (--max_nonfinite_steps {self.max_in_a_row}): stopping. The weights are those of step "
                f"{first - 1}, and the last checkpoint in {args.output_dir} is complete: resume from it with a lower "
                "--learning_rate, or look at the data of those steps."
            )


def _all_finite(optimizer: torch.optim.Optimizer) -> bool:
    """Whether every gradient the optimizer would apply is finite (one device sync for the whole model)."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return True
    # One fused norm per dtype/device group: a non-finite entry makes its tensor's norm non-finite.
    return bool(torch.isfinite(torch.stack([norm.float() for norm in torch._foreach_norm(grads)])).all())


__all__ = ["NonFiniteStepGuard"]
