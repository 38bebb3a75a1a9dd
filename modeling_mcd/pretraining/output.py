# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""What `MCDForPreTraining.forward` returns, and how it makes its embeddings unit vectors."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.utils import ModelOutput

from ..objective import ObjectiveInputs


def unit(features: torch.Tensor) -> torch.Tensor:
    """L2-normalise `(B, P)` features in float32 at least (float64 stays float64), whatever the autocast dtype.

    The distillation terms compare distances between unit vectors that are close to each other (student and EMA
    teacher as the momentum nears 1). bf16 unit vectors have norms 1 ± 4e-3, which moved L_pos 2 % and L_noisy 3 %
    off their value for the same directions once the teacher sat 1e-3 from the student.
    """
    return nn.functional.normalize(features.to(torch.promote_types(features.dtype, torch.float32)), dim=-1)


@dataclass
class MCDPreTrainingOutput(ModelOutput):
    r"""
    Output of [`MCDForPreTraining`].

    Args:
        loss (`torch.Tensor` of shape `()`): the total objective (docs/method.md §6).
        losses (`dict[str, torch.Tensor]`): every named term (`contrastive_loss`, `distill_*_loss`, `mlm_loss`, `loss`).
        objective_inputs ([`ObjectiveInputs`]): what the loss was computed from: the student's normalised u, ũ, v,
            the teacher's ū, ū̃ (, v̄), the MLM logits and labels at the masked positions, the logit scale (detached
            when the loss was computed; with its gradient when `embed_only=True`, for a loss computed outside) and the
            batch's `pair_ids`.
    """

    loss: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] | None = None
    objective_inputs: ObjectiveInputs | None = None


__all__ = ["MCDPreTrainingOutput", "unit"]
