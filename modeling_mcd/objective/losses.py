# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""The terms of the MCD objective (docs/method.md §2–§4) as pure loss functions.

They take GLOBAL, L2-normalised embeddings of shape (N, D): u = image, v = text, ũ = augmented image,
and their teacher twins ū, v̄, ū̃. `modeling_mcd.objective.mcd_loss.MCDLoss` gathers the LOCAL embeddings across
processes and combines these terms. CLIP's own loss is transformers' `image_text_contrastive_loss` (`clip_loss`).
The distillation terms (§3) live in `modeling_mcd.objective.distillation` and are re-exported here.

Every contrastive and distillation term takes optional `pair_ids` (N,): rows of one id are never negatives of each
other, a placeholder row takes no part (`modeling_mcd.objective.pairs`); `None` is the plain objective.

Every contrastive and distillation term also takes optional `anchor_rows` (R,), for the local loss (`--local_loss`,
docs/method.md §9): only the terms anchored at those rows are computed, against every row of the batch as the other
side, and divided by the normaliser of the WHOLE batch (its number of terms, or its Σ w for MP-NCE). The result is
that subset's share of the term: the shares of anchor sets that partition the N rows add up to the term itself.
`None` (every row an anchor) is the plain term, computed exactly as without the argument.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from transformers.models.clip.modeling_clip import image_text_contrastive_loss

from .distillation import (
    DISTILL_LOSSES,
    distill_neg_loss,
    distill_noisy_loss,
    distill_pos_loss,
    log_ratio_loss,
    pairwise_distance,
)
from .distributed import all_reduce_sum, world_info
from .pairs import check_embeddings, checked_anchor_rows, checked_pair_ids, real_row_count, same_pair_mask, zero_loss

#: Weight schedules of the augmented-view InfoNCE terms (docs/method.md §2, option `aug_nce_schedule`).
AUG_NCE_SCHEDULES = ("cosine", "constant")


def mp_nce_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    aug_image_embeds: torch.Tensor | None,
    logit_scale: torch.Tensor,
    aug_weight: float = 1.0,
    pair_ids: torch.Tensor | None = None,
    anchor_rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multi-positive NCE in one unified space (docs/method.md §2, paper Eq. 5).

    E = [u, v, ũ] (3N rows). Each row e has two positives p (the other members of its pair) and
    3N - 3 negatives (every row of every other pair, both modalities). Every ordered positive pair
    gets its own denominator: ℓ(e, p) = -s(e,p) + log(exp s(e,p) + Σ_{n ∈ N(e)} exp s(e,n)). Unlike
    SupCon, the other positive of e is NOT in the denominator.

    Args:
        image_embeds: (N, D) normalised u.
        text_embeds: (N, D) normalised v.
        aug_image_embeds: (N, D) normalised ũ; required (the `clip` objective uses CLIP's loss).
        logit_scale: scalar tensor, the already exponentiated scale (gradients flow into it).
        aug_weight: w of every positive pair involving ũ (1 - α in docs/method.md §2); (u, v) pairs have w = 1.
        pair_ids: (N,) long, optional: rows with the same id are never negatives of each other; rows with a
            negative id are neither anchors nor negatives (see the module docstring).
        anchor_rows: (R,) long, optional: only the anchors u_i, v_i, ũ_i of these pairs i (see the module
            docstring): their Σ w·ℓ, still divided by the Σ w of the whole batch.

    Returns:
        Scalar loss Σ w·ℓ / Σ w over the 6N ordered positive pairs (those of placeholder rows excluded); 0 when
        every row is a placeholder.
    """
    if aug_image_embeds is None:
        raise ValueError(
            "mp_nce_loss needs aug_image_embeds; the `clip` objective uses image_text_contrastive_loss instead"
        )
    check_embeddings(image_embeds=image_embeds, text_embeds=text_embeds, aug_image_embeds=aug_image_embeds)
    if not aug_weight >= 0:
        raise ValueError(f"aug_weight must be >= 0, got {aug_weight}")
    n = image_embeds.shape[0]
    pair_ids = checked_pair_ids(pair_ids, n, image_embeds.device)
    anchor_rows = checked_anchor_rows(anchor_rows, n, image_embeds.device)
    embeds = torch.cat([image_embeds, text_embeds, aug_image_embeds], dim=0)  # (3N, D)
    rows = torch.arange(3 * n, device=embeds.device)  # (3N,) every row of the stack
    # The anchors e: every row, or the u, v and ũ rows of the anchor pairs (3R,).
    anchors = rows if anchor_rows is None else torch.cat([anchor_rows + block * n for block in range(3)])
    logits = logit_scale * (embeds if anchor_rows is None else embeds[anchors]) @ embeds.t()  # (3R, 3N)
    if pair_ids is None:
        same_pair = (anchors[:, None] % n) == (rows[None, :] % n)  # (3R, 3N), self included
    else:
        same_pair = same_pair_mask(pair_ids, anchors % n).repeat(1, 3)  # (3R, 3N)
    # log Σ_{n ∈ N(e)} exp s(e, n): -inf on self and on the row's two positives. A row without any negative (only
    # possible with pair ids) gets -inf through a finite detour, so that its gradient stays finite (0).
    has_negative = ~same_pair.all(dim=1)  # (3R,)
    excluded = same_pair & has_negative[:, None]
    negatives_lse = logits.masked_fill(excluded, float("-inf")).logsumexp(dim=1)  # (3R,)
    negatives_lse = negatives_lse.masked_fill(~has_negative, float("-inf"))
    positives, weights = _mp_nce_positives(anchors, n, aug_weight, pair_ids, logits)  # (3R, 2) each
    positive_logits = logits.gather(1, positives)  # (3R, 2)
    per_pair = torch.logaddexp(positive_logits, negatives_lse[:, None]) - positive_logits  # (3R, 2)
    # The normaliser is the Σ w of every anchor of the batch, whichever anchors this call computes.
    all_weights = weights if anchor_rows is None else _mp_nce_positives(rows, n, aug_weight, pair_ids, logits)[1]
    return (weights * per_pair).sum() / all_weights.sum().clamp(min=torch.finfo(weights.dtype).tiny)


def _mp_nce_positives(
    anchors: torch.Tensor, n: int, aug_weight: float, pair_ids: torch.Tensor | None, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two positives of each anchor row e of the (3N)-row stack [u, v, ũ] and their weights w(e, p).

    Returns:
        `(positives, weights)`, both (len(anchors), 2): column indices into the stack, and weights of `like`'s dtype
        (1 for (u, v) pairs, `aug_weight` for a pair that involves ũ, 0 for a placeholder anchor).
    """
    # The two positives of row e sit N and 2N rows further in the (circular) stack.
    positives = (anchors[:, None] + n * torch.arange(1, 3, device=anchors.device)) % (3 * n)  # (3R, 2)
    # Blocks 0, 1, 2 = u, v, ũ: a pair involves ũ iff one of its blocks is 2.
    involves_aug = (anchors[:, None] // n == 2) | (positives // n == 2)  # (3R, 2)
    weights = like.new_full(positives.shape, aug_weight).masked_fill(~involves_aug, 1.0)  # (3R, 2)
    if pair_ids is not None:
        weights = weights * (pair_ids[anchors % n] >= 0)[:, None]  # a placeholder row is no anchor
    return positives, weights


def clip_loss(
    logits_per_text: torch.Tensor,
    pair_ids: torch.Tensor | None = None,
    logits_per_image: torch.Tensor | None = None,
    anchor_rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """CLIP's symmetric InfoNCE (docs/method.md §2, paper Eq. 1), with pair ids.

    Args:
        logits_per_text: (N, N) scaled similarities, text i (rows) against image j (columns); with `anchor_rows`,
            only those texts' rows (R, N).
        pair_ids: (N,) long, optional: text i and image j ≠ i with the same id are not a negative of each other;
            placeholder rows (negative id) are neither anchors nor negatives. `None` (and no `anchor_rows`):
            transformers' `image_text_contrastive_loss` itself.
        logits_per_image: (R, N) the images of `anchor_rows` against every text; needed with `anchor_rows` (without,
            it is the transpose of `logits_per_text`).
        anchor_rows: (R,) long, optional: only the cross-entropies anchored at the texts and images of these rows
            (see the module docstring), still divided by twice the number of real rows of the whole batch.

    Returns:
        Scalar: the mean of the text->image and image->text cross-entropies over the real rows (0 when none).
    """
    if pair_ids is None and anchor_rows is None:
        return image_text_contrastive_loss(logits_per_text)
    n = logits_per_text.shape[-1]
    columns = torch.arange(n, device=logits_per_text.device)  # (N,)
    rows = checked_anchor_rows(anchor_rows, n, logits_per_text.device)
    if rows is None:
        rows, logits_per_image = columns, logits_per_text.t()
    elif logits_per_image is None:
        raise ValueError("clip_loss with anchor_rows needs logits_per_image, the anchor images against every text")
    for name, logits in (("logits_per_text", logits_per_text), ("logits_per_image", logits_per_image)):
        if tuple(logits.shape) != (rows.shape[0], n):
            raise ValueError(f"{name} must be (R, N) = {(rows.shape[0], n)}, got {tuple(logits.shape)}")
    pair_ids = checked_pair_ids(pair_ids, n, logits_per_text.device)
    if pair_ids is None:
        excluded, real = None, torch.ones_like(rows, dtype=torch.bool)
    else:
        # Excluded: every other row of the same pair and every placeholder; the row's own positive stays.
        excluded = same_pair_mask(pair_ids, rows) & (rows[:, None] != columns[None, :])  # (R, N)
        real = pair_ids[rows] >= 0  # (R,)
    if anchor_rows is None and not bool(real.any()):
        return zero_loss(logits_per_text)

    def cross_entropy(logits: torch.Tensor, reduction: str) -> torch.Tensor:
        masked = logits if excluded is None else logits.masked_fill(excluded, float("-inf"))
        return F.cross_entropy(masked[real], rows[real], reduction=reduction)

    if anchor_rows is None:  # the mean over the real rows, as `image_text_contrastive_loss` takes it
        return (cross_entropy(logits_per_text, "mean") + cross_entropy(logits_per_image, "mean")) / 2.0
    total = cross_entropy(logits_per_text, "sum") + cross_entropy(logits_per_image, "sum")
    return total / (2.0 * real_row_count(pair_ids, n, total))


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor, global_count: torch.Tensor | None = None) -> torch.Tensor:
    """Masked-language-modelling cross-entropy over the masked tokens of the GLOBAL batch (docs/method.md §4, Eq. 11).

    Each rank returns `local_sum * world_size / global_count`. After DDP averages gradients over the
    W ranks this gives d(global_sum / global_count)/dθ, the gradient of the 1-process mean, however
    unevenly the masked tokens fall across ranks. The value on one rank is its share; the mean of
    the values over ranks (what the Trainer logs) is the global mean.

    Args:
        logits: (B, L, V) MLM head outputs (or (M, V) for M selected positions, with labels (M,)).
        labels: (B, L) target token ids, -100 where not masked.
        global_count: the number of masked tokens in the whole global batch; by default the sum of
            `labels != -100` over the processes. Gradient accumulation passes the count over all its
            micro-batches, so that each micro-batch's share is normalised like the whole batch.

    Returns:
        Scalar loss; equals `F.cross_entropy(..., ignore_index=-100)` in one process, and 0 (not NaN)
        when the global batch has no masked token.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"mlm_labels {tuple(labels.shape)} must be mlm_logits {tuple(logits.shape)} without V")
    local_sum = F.cross_entropy(logits.flatten(0, -2), labels.flatten(), ignore_index=-100, reduction="sum")
    if global_count is None:
        global_count = all_reduce_sum((labels != -100).sum().to(local_sum.dtype))
    return local_sum * world_info()[1] / torch.as_tensor(global_count, dtype=local_sum.dtype).clamp(min=1)


def progressive_alpha(step: int, total_steps: int, schedule: str = "cosine") -> float:
    """Progressive-distillation weight α(step) (docs/method.md §2, paper §4.4); InfoNCE on ũ is weighted 1 - α.

    Args:
        step: current optimizer step (clamped to [0, total_steps]).
        total_steps: T, the number of training steps (> 0).
        schedule: `cosine`: α = (1 - cos(π·step/T)) / 2, rising from 0 to 1; `constant`: α = 0.

    Returns:
        α in [0, 1].
    """
    if schedule not in AUG_NCE_SCHEDULES:
        raise ValueError(f"aug_nce_schedule must be one of {AUG_NCE_SCHEDULES}, got {schedule!r}")
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")
    if schedule == "constant":
        return 0.0
    progress = min(max(step, 0), total_steps) / total_steps
    return (1.0 - math.cos(math.pi * progress)) / 2.0


__all__ = [
    "AUG_NCE_SCHEDULES",
    "DISTILL_LOSSES",
    "clip_loss",
    "distill_neg_loss",
    "distill_noisy_loss",
    "distill_pos_loss",
    "log_ratio_loss",
    "mlm_loss",
    "mp_nce_loss",
    "pairwise_distance",
    "progressive_alpha",
]
