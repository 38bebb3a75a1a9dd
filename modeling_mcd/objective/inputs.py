# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""`ObjectiveInputs`: the tensors the MCD objective is computed from, in one place.

`MCDForPreTraining` returns them (`MCDPreTrainingOutput.objective_inputs`), `MCDLoss` reads them (each process's LOCAL
rows in `forward`, the GLOBAL batch in `terms`) and gradient accumulation caches and replays them
(`modeling_mcd.trainer.accumulation`). Which of them carry gradient and which come from the teacher is said here once
(`STUDENT_FIELDS`, `TEACHER_FIELDS`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.utils._pytree as pytree

#: The student's embeddings: gathered across processes with gradient.
STUDENT_FIELDS = ("image_embeds", "aug_image_embeds", "text_embeds")
#: The EMA teacher's embeddings: gathered without gradient, computed once per step under gradient accumulation.
TEACHER_FIELDS = ("teacher_image_embeds", "teacher_aug_image_embeds", "teacher_text_embeds")


@dataclass
class ObjectiveInputs:
    r"""
    What the objective (docs/method.md §6) is computed from. Embeddings are L2-normalised; `None` marks a tensor the
    objective in use does not need (e.g. no augmented view for `clip`, no teacher for `mpnce`).

    Args:
        image_embeds (`(B, P)`): the student's original view, u.
        text_embeds (`(B, P)`): the student's caption, v.
        logit_scale (`torch.Tensor` of shape `()`): the exponentiated learnable temperature.
        aug_image_embeds (`(B, P)`, *optional*): the student's augmented view, ũ (`mpnce`, `mcd`).
        teacher_image_embeds, teacher_aug_image_embeds (`(B, P)`, *optional*): the teacher's ū and ū̃ (`mcd`).
        teacher_text_embeds (`(B, P)`, *optional*): v̄ from an EMA text tower; `None` means v̄ = stopgrad(v).
        mlm_logits (`(M, V)`, *optional*): MLM head logits at the M masked positions (always this process's own).
        mlm_labels (`(M,)`, *optional*): their target token ids.
        pair_ids (`(B,)` long, *optional*): the source of each row: rows with the same id are never negatives of each
            other, rows with a negative id take no part (`modeling_mcd.objective.pairs`). `None`: every row is its own
            pair.
    """

    image_embeds: torch.Tensor
    text_embeds: torch.Tensor
    logit_scale: torch.Tensor
    aug_image_embeds: torch.Tensor | None = None
    teacher_image_embeds: torch.Tensor | None = None
    teacher_aug_image_embeds: torch.Tensor | None = None
    teacher_text_embeds: torch.Tensor | None = None
    mlm_logits: torch.Tensor | None = None
    mlm_labels: torch.Tensor | None = None
    pair_ids: torch.Tensor | None = None

    def replace(self, **changes) -> ObjectiveInputs:
        """A copy with `changes` (field name -> tensor) applied; the tensors themselves are shared, not copied."""
        return dataclasses.replace(self, **changes)

    def embeddings(self) -> dict[str, torch.Tensor | None]:
        """The student and teacher embeddings by field name (`STUDENT_FIELDS` + `TEACHER_FIELDS`)."""
        return {name: getattr(self, name) for name in (*STUDENT_FIELDS, *TEACHER_FIELDS)}


# A pytree node, as transformers makes every `ModelOutput`: DDP flattens a forward's output to route its tensors through
# its backward hooks (`find_unused_parameters`, `static_graph`), and would otherwise see this dataclass as one opaque
# leaf inside `MCDPreTrainingOutput`.
pytree.register_dataclass(ObjectiveInputs)


__all__ = ["ObjectiveInputs", "STUDENT_FIELDS", "TEACHER_FIELDS"]
