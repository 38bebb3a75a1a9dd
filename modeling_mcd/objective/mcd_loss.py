# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""`MCDLoss`: the whole MCD objective over the global batch (docs/method.md §6, paper Eq. 13), as named terms.

`MCDLoss.forward` takes each process's LOCAL [`ObjectiveInputs`], gathers them across processes
(`modeling_mcd.objective.distributed`: with gradient for the student, without for the teacher) and hands the GLOBAL
embeddings to `MCDLoss.terms`, which combines the pure terms of `modeling_mcd.objective.losses`; so the value does not
depend on how the global batch is split. Gradient accumulation (`modeling_mcd.trainer.accumulation`) calls `terms`
directly on embeddings it gathered itself.

With `local_loss` (`--local_loss`, open_clip's `--local-loss`; docs/method.md §9) each process computes only the
terms anchored at its OWN rows, against every row of the global batch: (3B, 3N) MP-NCE logits instead of (3N, 3N),
(B, N) distance matrices instead of (N, N). Each such term is this process's share of the global term (the pure
terms divide by the global normaliser, `modeling_mcd.objective.losses`), so the shares of the W processes add up to it.
The value reported is that sum (one all-reduce, without gradient) and the gradient is W × the share's: DDP averages over
the W processes, and W · (1/W) · Σ_r ∂share_r = ∂(global term), the gradient without `local_loss`.

The objective is always computed in float32 (float64 stays float64), with autocast off: under bf16 the
(3N)² logits, the cosines and the square roots of 2 − 2cos lose the small distance ratios the distillation
terms regress on (measured: L_pos and L_noisy 40 % off a float64 reference with a teacher 1 % away from the
student). The towers may still run in bf16; only their embeddings are cast up.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .distributed import all_reduce_sum, gather_no_grad, gather_with_grad, world_info
from .inputs import STUDENT_FIELDS, TEACHER_FIELDS, ObjectiveInputs
from .losses import (
    DISTILL_LOSSES,
    clip_loss,
    distill_neg_loss,
    distill_noisy_loss,
    distill_pos_loss,
    mlm_loss,
    mp_nce_loss,
)
from .pairs import rows_of

#: The training objectives (docs/method.md §2): CLIP's loss, MP-NCE alone, or MP-NCE + distillation.
OBJECTIVES = ("clip", "mpnce", "mcd")


def _required(value: torch.Tensor | None, name: str, needed_by: str) -> torch.Tensor:
    """Return `value`, or raise a ValueError naming the missing argument and what needs it."""
    if value is None:
        raise ValueError(f"MCDLoss needs {name} for {needed_by}")
    return value


def full_precision(tensor: torch.Tensor | None) -> torch.Tensor | None:
    """`tensor` in float32 when it is in a lower floating precision (bf16, fp16); anything else as it is."""
    if tensor is None or not tensor.is_floating_point() or tensor.dtype in (torch.float32, torch.float64):
        return tensor
    return tensor.float()


class MCDLoss(nn.Module):
    """The full MCD objective over the global batch (docs/method.md §6, paper Eq. 13), returning named terms.

    `loss = contrastive_loss + lambda_dist * distill_loss + beta_mlm * mlm_loss`, with
    `distill_loss = lambda_pos * distill_pos_loss + lambda_neg * distill_neg_loss
    + lambda_noisy * distill_noisy_loss`. Only the terms that apply are returned:

    - `clip`: `contrastive_loss` = CLIP loss over u·v (+ `mlm_loss` if `use_mlm`).
    - `mpnce`: `contrastive_loss` = MP-NCE with w_aug = 1 - α, no distillation (+ `mlm_loss` if `use_mlm`).
    - `mcd`: MP-NCE + the distillation terms switched on by `use_pos`/`use_neg`/`use_noisy`
      (+ `mlm_loss` if `use_mlm`).

    Args:
        objective: `clip`, `mpnce` or `mcd`.
        lambda_dist: λ, weight of the whole distillation loss.
        lambda_pos, lambda_neg, lambda_noisy: weights of L_pos, L_neg, L_noisy inside it.
        beta_mlm: β, weight of the MLM loss.
        distill_loss: regression of the log-ratio difference: `l2`, `l1` or `smooth_l1`.
        eps: ε added to distances in the log-ratio loss.
        use_pos, use_neg, use_noisy: switch each distillation term (objective `mcd` only).
        use_mlm: add the MLM term (every objective).
        local_loss: in `forward`, compute only the terms anchored at this process's rows, against the whole global
            batch (see the module docstring): the same value and, after DDP's average, the same gradients, with
            W times smaller logit and distance matrices.
    """

    def __init__(
        self,
        objective: str = "mcd",
        lambda_dist: float = 1.0,
        lambda_pos: float = 1.0,
        lambda_neg: float = 1.0,
        lambda_noisy: float = 1.0,
        beta_mlm: float = 1.0,
        distill_loss: str = "l2",
        eps: float = 1e-6,
        use_pos: bool = True,
        use_neg: bool = True,
        use_noisy: bool = True,
        use_mlm: bool = True,
        local_loss: bool = False,
    ):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        weights = {
            "lambda_dist": lambda_dist,
            "lambda_pos": lambda_pos,
            "lambda_neg": lambda_neg,
            "lambda_noisy": lambda_noisy,
            "beta_mlm": beta_mlm,
        }
        for name, value in weights.items():
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if distill_loss not in DISTILL_LOSSES:
            raise ValueError(f"distill_loss must be one of {DISTILL_LOSSES}, got {distill_loss!r}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.objective = objective
        self.lambda_dist = lambda_dist
        self.lambda_pos = lambda_pos
        self.lambda_neg = lambda_neg
        self.lambda_noisy = lambda_noisy
        self.beta_mlm = beta_mlm
        self.distill_loss = distill_loss
        self.eps = eps
        self.use_pos = use_pos
        self.use_neg = use_neg
        self.use_noisy = use_noisy
        self.use_mlm = use_mlm
        self.local_loss = local_loss

    def extra_repr(self) -> str:
        return (
            f"objective={self.objective!r}, lambda_dist={self.lambda_dist}, lambda_pos={self.lambda_pos}, "
            f"lambda_neg={self.lambda_neg}, lambda_noisy={self.lambda_noisy}, beta_mlm={self.beta_mlm}, "
            f"distill_loss={self.distill_loss!r}, use_pos={self.use_pos}, use_neg={self.use_neg}, "
            f"use_noisy={self.use_noisy}, use_mlm={self.use_mlm}, local_loss={self.local_loss}"
        )

    def forward(self, inputs: ObjectiveInputs, alpha: float = 0.0) -> dict[str, torch.Tensor]:
        r"""
        Compute every applicable term over the global batch.

        Args:
            inputs ([`ObjectiveInputs`]): this process's LOCAL rows. The student embeddings are gathered across
                processes with gradient, the teacher's and `pair_ids` without; `aug_image_embeds` is needed by `mpnce`
                and `mcd`, `teacher_image_embeds` by L_pos and L_noisy, `teacher_aug_image_embeds` by L_pos and L_neg,
                `mlm_logits`/`mlm_labels` when `use_mlm` (they stay local: see `terms`).
            alpha (`float`): progressive-distillation α in [0, 1] (see `progressive_alpha`); w_aug = 1 - α.

        Returns:
            `dict[str, torch.Tensor]` of scalars: `loss`, `contrastive_loss`, and when they apply `distill_pos_loss`,
            `distill_neg_loss`, `distill_noisy_loss`, `distill_loss`, `mlm_loss`.
        """
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        anchor_rows = None
        if self.local_loss:  # this process's rows of the global batch: rank r holds rows r·B .. (r+1)·B - 1
            rank, rows = world_info()[0], inputs.image_embeds.shape[0]
            anchor_rows = torch.arange(rank * rows, (rank + 1) * rows, device=inputs.image_embeds.device)  # (B,)
        needs_aug = self.objective != "clip"
        needs_pos_or_noisy = self.uses_teacher and (self.use_pos or self.use_noisy)
        needs_pos_or_neg = self.uses_teacher and (self.use_pos or self.use_neg)
        teacher_text, pair_ids = inputs.teacher_text_embeds, inputs.pair_ids
        global_inputs = inputs.replace(
            image_embeds=gather_with_grad(inputs.image_embeds),
            text_embeds=gather_with_grad(inputs.text_embeds),
            aug_image_embeds=gather_with_grad(_required(inputs.aug_image_embeds, "aug_image_embeds", self.objective))
            if needs_aug
            else None,
            teacher_image_embeds=gather_no_grad(
                _required(inputs.teacher_image_embeds, "teacher_image_embeds", "L_pos/L_noisy")
            )
            if needs_pos_or_noisy
            else None,
            teacher_aug_image_embeds=gather_no_grad(
                _required(inputs.teacher_aug_image_embeds, "teacher_aug_image_embeds", "L_pos/L_neg")
            )
            if needs_pos_or_neg
            else None,
            teacher_text_embeds=gather_no_grad(teacher_text) if teacher_text is not None else None,
            pair_ids=gather_no_grad(pair_ids) if pair_ids is not None else None,
        )
        return self.terms(global_inputs, alpha, anchor_rows=anchor_rows)

    @property
    def uses_teacher(self) -> bool:
        """Whether any distillation term (and so the teacher) is part of the objective."""
        return self.objective == "mcd" and (self.use_pos or self.use_neg or self.use_noisy)

    def terms(
        self,
        inputs: ObjectiveInputs,
        alpha: float = 0.0,
        mlm_count: torch.Tensor | None = None,
        anchor_rows: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        r"""
        Every applicable term from the GLOBAL batch, in float32 with autocast off.

        Args:
            inputs ([`ObjectiveInputs`]): every embedding (and `pair_ids`) is already the whole global batch, `(N, P)`;
                `mlm_logits` and `mlm_labels` stay LOCAL (the MLM loss is a per-token sum, normalised by `mlm_count`).
            alpha (`float`): as in `forward`.
            mlm_count (`torch.Tensor`, *optional*): the global number of masked tokens; by default counted over the
                processes.
            anchor_rows (`(R,)` long, *optional*): the local loss (see the module docstring). The rows of the global
                batch that are THIS process's anchors; the anchor sets of the processes must partition the N rows.
                Every contrastive and distillation term then has the global value (all-reduced; a collective: every
                process must call) and W × the gradient of this process's share. `None`: every term over every
                anchor, on every process.

        Returns:
            The named terms, as `forward`.
        """
        with torch.autocast(device_type=inputs.image_embeds.device.type, enabled=False):
            full = inputs.replace(
                **{
                    name: full_precision(getattr(inputs, name))
                    for name in ("logit_scale", "mlm_logits", *STUDENT_FIELDS, *TEACHER_FIELDS)
                }
            )
            return self._terms(full, alpha, mlm_count, anchor_rows)

    def _terms(
        self, inputs: ObjectiveInputs, alpha: float, mlm_count: torch.Tensor | None, anchor_rows: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        image, text, logit_scale, pair_ids = (
            inputs.image_embeds,
            inputs.text_embeds,
            inputs.logit_scale,
            inputs.pair_ids,
        )
        aug_image, teacher_image, teacher_aug = (
            inputs.aug_image_embeds,
            inputs.teacher_image_embeds,
            inputs.teacher_aug_image_embeds,
        )
        terms: dict[str, torch.Tensor] = {}
        if self.objective == "clip":
            # Text anchors against every image (R, N); with anchor rows also the image anchors against every text.
            logits_per_text = logit_scale * rows_of(text, anchor_rows) @ image.t()
            logits_per_image = None if anchor_rows is None else logit_scale * image[anchor_rows] @ text.t()
            terms["contrastive_loss"] = clip_loss(logits_per_text, pair_ids, logits_per_image, anchor_rows)
        else:
            aug_image = _required(aug_image, "aug_image_embeds", self.objective)
            terms["contrastive_loss"] = mp_nce_loss(
                image, text, aug_image, logit_scale, 1.0 - alpha, pair_ids=pair_ids, anchor_rows=anchor_rows
            )

        distill_weights: dict[str, float] = {}  # the enabled distillation terms, by name, with their λ
        if self.uses_teacher:
            teacher_text = text.detach() if inputs.teacher_text_embeds is None else inputs.teacher_text_embeds
            if self.use_pos or self.use_noisy:
                teacher_image = _required(teacher_image, "teacher_image_embeds", "L_pos/L_noisy")
            if self.use_pos or self.use_neg:
                teacher_aug = _required(teacher_aug, "teacher_aug_image_embeds", "L_pos/L_neg")
            common = {"eps": self.eps, "kind": self.distill_loss, "pair_ids": pair_ids, "anchor_rows": anchor_rows}
            if self.use_pos:
                terms["distill_pos_loss"] = distill_pos_loss(
                    image, text, aug_image, teacher_image, teacher_text, teacher_aug, **common
                )
                distill_weights["distill_pos_loss"] = self.lambda_pos
            if self.use_neg:
                terms["distill_neg_loss"] = distill_neg_loss(text, aug_image, teacher_text, teacher_aug, **common)
                distill_weights["distill_neg_loss"] = self.lambda_neg
            if self.use_noisy:
                terms["distill_noisy_loss"] = distill_noisy_loss(image, text, teacher_image, teacher_text, **common)
                distill_weights["distill_noisy_loss"] = self.lambda_noisy
        if anchor_rows is not None:
            terms = _global_terms(terms)

        loss = terms["contrastive_loss"]
        if self.uses_teacher:
            distill = torch.zeros((), dtype=loss.dtype, device=loss.device)
            for name, weight in distill_weights.items():
                distill = distill + weight * terms[name]
            terms["distill_loss"] = distill
            loss = loss + self.lambda_dist * distill

        if self.use_mlm:
            # A per-token sum over this process's captions / the global count: a share already, local loss or not.
            terms["mlm_loss"] = mlm_loss(
                _required(inputs.mlm_logits, "mlm_logits", "use_mlm=True"),
                _required(inputs.mlm_labels, "mlm_labels", "use_mlm=True"),
                global_count=mlm_count,
            )
            loss = loss + self.beta_mlm * terms["mlm_loss"]

        terms["loss"] = loss
        return terms


def _global_terms(shares: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Local-loss shares -> terms with the GLOBAL value and W × the share's gradient (see the module docstring).

    Args:
        shares: scalar terms, each this process's share of a global term (the shares of all processes add up to it).

    Returns:
        The same names: value Σ_r share_r (one all-reduce of every term at once, without gradient), so that every
        process reports and logs the global term as without the local loss; gradient W · ∂share, which DDP's average
        over the W processes turns into ∂(global term). In one process: the share itself.
    """
    world_size = world_info()[1]
    names = list(shares)
    totals = all_reduce_sum(torch.stack([shares[name].detach() for name in names]))  # (T,) the global values
    # share - share.detach() is exactly 0 in value and carries the share's gradient.
    return {
        name: totals[index] + world_size * (shares[name] - shares[name].detach()) for index, name in enumerate(names)
    }


def count_masked_tokens(mlm_labels: torch.Tensor) -> torch.Tensor:
    """The number of masked tokens (labels != -100) over every process: the MLM loss's normaliser."""
    return all_reduce_sum((mlm_labels != -100).sum().to(torch.float64))


__all__ = ["OBJECTIVES", "MCDLoss", "count_masked_tokens", "full_precision"]
