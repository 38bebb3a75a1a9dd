# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""`TeacherEMACallback`: WHEN the EMA teacher moves: after every optimizer step that moved the student."""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import TrainerCallback
from transformers.utils import logging

from ..pretraining.model import MCDForPreTraining
from ..pretraining.teacher import momentum_at

logger = logging.get_logger(__name__)


def unwrap_pretraining_model(model: torch.nn.Module) -> MCDForPreTraining:
    """The `MCDForPreTraining` inside whatever wraps it (DDP, DeepSpeed, accelerate); `TypeError` when there is none."""
    while not isinstance(model, MCDForPreTraining) and hasattr(model, "module"):
        model = model.module
    if not isinstance(model, MCDForPreTraining):
        raise TypeError(f"MCDTrainer trains an MCDForPreTraining, got {type(model).__name__}")
    return model


class TeacherEMACallback(TrainerCallback):
    """After every optimizer step: θ̄ ← m·θ̄ + (1 − m)·θ with m = m(step) (docs/method.md §5).

    `state.global_step` has just been incremented when `on_step_end` fires, so the update after the
    k-th optimizer step (k = 1..T) uses m(k − 1): the first update uses m₀ and the schedule reaches 1
    only after training. Depends on nothing but the step, so a resumed run continues the same schedule.

    When the optimizer step was skipped (fp16's gradient scaler found an inf or NaN), the student did not move, and
    neither does the teacher: it would otherwise drift towards an unchanged student while the schedule moves on.

    Args:
        base_momentum (`float`): m₀.
        step_was_skipped (`Callable[[], bool]`, *optional*): whether the last optimizer step was skipped (the
            Trainer's `accelerator.optimizer_step_was_skipped`).
    """

    def __init__(self, base_momentum: float, step_was_skipped: Callable[[], bool] = lambda: False):
        self.base_momentum = base_momentum
        self.step_was_skipped = step_was_skipped
        self.last_momentum: float | None = None
        self.skipped_steps = 0

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        # The backend is set up by now; DeepSpeed bf16/fp16 cast the teacher down with the rest of the model.
        unwrap_pretraining_model(model).keep_teacher_fp32()

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if not unwrap_pretraining_model(model).loss_fn.uses_teacher:
            return  # `clip`, `mpnce`: no term reads the teacher
        if self.step_was_skipped():
            self.skipped_steps += 1
            logger.warning(
                "step %d: the optimizer step was skipped (inf/NaN gradients); the teacher stays", state.global_step
            )
            return
        momentum = momentum_at(state.global_step - 1, max(state.max_steps, 1), self.base_momentum)
        unwrap_pretraining_model(model).update_teacher(momentum)
        self.last_momentum = momentum


__all__ = ["TeacherEMACallback", "unwrap_pretraining_model"]
