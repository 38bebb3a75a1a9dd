# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""The terms of the MCD objective (docs/method.md §2–§4) as pure loss functions.

They take GLOBAL, L2-normalised embeddings of shape (N, D): u = image, v = text, ũ = augmented image,
and their teacher twins ū, v̄, ū̃. `modeling_mcd.objective.MCDLoss` gathers the LOCAL embeddings across
processes and combines these terms. CLIP's own loss is transformers' `image_text_contrastive_loss` (`clip_loss`).

Every contrastive and distillation term takes optional `pair_ids` (N,): rows of one id are never negatives of each
other, a placeholder row takes no part (`modeling_mcd.pairs`); `None` is the plain objective.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from transformers.models.clip.modeling_clip import image_text_contrastive_loss

from .distributed import all_reduce_sum, world_info
from .pairs import checked_pair_ids, same_pair_mask, zero_loss

#: Weight schedules of the augmented-view InfoNCE terms (docs/method.md §2, option `aug_nce_schedule`).
AUG_NCE_SCHEDULES = ("cosine", "constant")
# Regression of the log-ratio difference against 0 (docs/method.md §3, option `distill_loss`).
_DISTILL_REGRESSIONS = {"l2": F.mse_loss, "l1": F.l1_loss, "smooth_l1": F.smooth_l1_loss}
#: The choices of `distill_loss`.
DISTILL_LOSSES = tuple(_DISTILL_REGRESSIONS)
# Clamp of 2 - 2cos before the square root: keeps d(a, a) finite AND its gradient finite (sqrt'(0) = inf).
_MIN_SQUARED_DISTANCE = 1e-12


def _check_embeddings(**named: torch.Tensor) -> None:
    """Raise unless every named tensor is (N, D) with the same N and D."""
    shapes = {name: tuple(t.shape) for name, t in named.items()}
    if any(len(s) != 2 for s in shapes.values()) or len(set(shapes.values())) != 1:
        raise ValueError(f"expected embeddings of one shape (N, D), got {shapes}")


def mp_nce_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    aug_image_embeds: torch.Tensor | None,
    logit_scale: torch.Tensor,
    aug_weight: float = 1.0,
    pair_ids: torch.Tensor | None = None,
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

    Returns:
        Scalar loss Σ w·ℓ / Σ w over the 6N ordered positive pairs (those of placeholder rows excluded); 0 when
        every row is a placeholder.
    """
    if aug_image_embeds is None:
        raise ValueError(
            "mp_nce_loss needs aug_image_embeds; the `clip` objective uses image_text_contrastive_loss instead"
        )
    _check_embeddings(image_embeds=image_embeds, text_embeds=text_embeds, aug_image_embeds=aug_image_embeds)
    if not aug_weight >= 0:
        raise ValueError(f"aug_weight must be >= 0, got {aug_weight}")
    n = image_embeds.shape[0]
    pair_ids = checked_pair_ids(pair_ids, n, image_embeds.device)
    embeds = torch.cat([image_embeds, text_embeds, aug_image_embeds], dim=0)  # (3N, D)
    logits = logit_scale * embeds @ embeds.t()  # (3N, 3N)
    rows = torch.arange(3 * n, device=embeds.device)  # (3N,)
    if pair_ids is None:
        same_pair = (rows[:, None] % n) == (rows[None, :] % n)  # (3N, 3N), self included
    else:
        same_pair = same_pair_mask(pair_ids).repeat(3, 3)  # (3N, 3N)
    # log Σ_{n ∈ N(e)} exp s(e, n): -inf on self and on the row's two positives. A row without any negative (only
    # possible with pair ids) gets -inf through a finite detour, so that its gradient stays finite (0).
    has_negative = ~same_pair.all(dim=1)  # (3N,)
    excluded = same_pair & has_negative[:, None]
    negatives_lse = logits.masked_fill(excluded, float("-inf")).logsumexp(dim=1)  # (3N,)
    negatives_lse = negatives_lse.masked_fill(~has_negative, float("-inf"))
    # The two positives of row e sit N and 2N rows further in the (circular) stack.
    positives = (rows[:, None] + n * torch.arange(1, 3, device=embeds.device)) % (3 * n)  # (3N, 2)
    positive_logits = logits.gather(1, positives)  # (3N, 2)
    per_pair = torch.logaddexp(positive_logits, negatives_lse[:, None]) - positive_logits  # (3N, 2)
    # Blocks 0, 1, 2 = u, v, ũ: a pair involves ũ iff one of its blocks is 2.
    involves_aug = (rows[:, None] // n == 2) | (positives // n == 2)  # (3N, 2)
    weights = per_pair.new_full(per_pair.shape, aug_weight).masked_fill(~involves_aug, 1.0)  # (3N, 2)
    if pair_ids is not None:
        weights = weights * (pair_ids >= 0).repeat(3)[:, None]  # a placeholder row is no anchor
    return (weights * per_pair).sum() / weights.sum().clamp(min=torch.finfo(weights.dtype).tiny)


def clip_loss(logits_per_text: torch.Tensor, pair_ids: torch.Tensor | None = None) -> torch.Tensor:
    """CLIP's symmetric InfoNCE (docs/method.md §2, paper Eq. 1), with pair ids.

    Args:
        logits_per_text: (N, N) scaled similarities, text i (rows) against image j (columns).
        pair_ids: (N,) long, optional: text i and image j ≠ i with the same id are not a negative of each other;
            placeholder rows (negative id) are neither anchors nor negatives. `None`: transformers'
            `image_text_contrastive_loss` itself.

    Returns:
        Scalar: the mean of the text->image and image->text cross-entropies over the real rows (0 when none).
    """
    if pair_ids is None:
        return image_text_contrastive_loss(logits_per_text)
    n = logits_per_text.shape[0]
    pair_ids = checked_pair_ids(pair_ids, n, logits_per_text.device)
    targets = torch.arange(n, device=logits_per_text.device)
    # Excluded: every other row of the same pair and every placeholder; the row's own positive stays.
    excluded = same_pair_mask(pair_ids) & (targets[:, None] != targets[None, :])
    real = pair_ids >= 0
    if not bool(real.any()):
        return zero_loss(logits_per_text)
    text_to_image = F.cross_entropy(logits_per_text.masked_fill(excluded, float("-inf"))[real], targets[real])
    image_to_text = F.cross_entropy(logits_per_text.t().masked_fill(excluded, float("-inf"))[real], targets[real])
    return (text_to_image + image_to_text) / 2.0


def _distance_from_cosine(cosine: torch.Tensor) -> torch.Tensor:
    """d = sqrt(2 - 2cos) for unit vectors, clamped so that d and its gradient stay finite at d = 0."""
    return (2.0 - 2.0 * cosine).clamp(min=_MIN_SQUARED_DISTANCE).sqrt()


def pairwise_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between L2-normalised vectors (d(a, b) of docs/method.md §Notation).

    Args:
        a: (N, D) normalised vectors.
        b: (M, D) normalised vectors.

    Returns:
        (N, M) distances `sqrt(2 - 2 a·b)`; finite, with a finite gradient, when two vectors coincide.
    """
    return _distance_from_cosine(a @ b.t())


def _row_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, D), (N, D) -> (N,) distances d(a_i, b_i) without building the (N, N) matrix."""
    return _distance_from_cosine((a * b).sum(dim=-1))


def log_ratio_loss(
    student_ab: torch.Tensor,
    student_cd: torch.Tensor,
    teacher_ab: torch.Tensor,
    teacher_cd: torch.Tensor,
    eps: float = 1e-6,
    kind: str = "l2",
) -> torch.Tensor:
    """Log-ratio loss (docs/method.md §3, paper Eq. 6; Kim et al., CVPR 2019): learn the teacher's distance ratios.

    Args:
        student_ab: distances d_s(a, b), any shape broadcastable with the others.
        student_cd: distances d_s(c, d).
        teacher_ab: distances d_t(a, b) (no gradient expected).
        teacher_cd: distances d_t(c, d).
        eps: added to every distance before the log.
        kind: `l2` (squared), `l1` (absolute) or `smooth_l1` (torch's smooth L1 against 0).

    Returns:
        Scalar mean over all elements of the regressed difference
        `log((d_s(a,b)+ε)/(d_s(c,d)+ε)) - log((d_t(a,b)+ε)/(d_t(c,d)+ε))`.
    """
    if kind not in _DISTILL_REGRESSIONS:
        raise ValueError(f"distill_loss must be one of {sorted(_DISTILL_REGRESSIONS)}, got {kind!r}")
    student_log_ratio = torch.log(student_ab + eps) - torch.log(student_cd + eps)
    teacher_log_ratio = torch.log(teacher_ab + eps) - torch.log(teacher_cd + eps)
    difference = student_log_ratio - teacher_log_ratio
    return _DISTILL_REGRESSIONS[kind](difference, torch.zeros_like(difference))


def distill_pos_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    aug_image_embeds: torch.Tensor,
    teacher_image_embeds: torch.Tensor,
    teacher_text_embeds: torch.Tensor,
    teacher_aug_image_embeds: torch.Tensor,
    eps: float = 1e-6,
    kind: str = "l2",
    pair_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_pos (docs/method.md §3, paper Eq. 7): misalignment inside a positive pair, anchored at the text v_i.

    Student ratio d(v_i, u_i) / d(v_i, ũ_i) against teacher ratio d(v̄_i, ū_i) / d(v̄_i, ū̃_i).

    Args:
        image_embeds, text_embeds, aug_image_embeds: (N, D) normalised student u, v, ũ.
        teacher_image_embeds, teacher_text_embeds, teacher_aug_image_embeds: (N, D) ū, v̄, ū̃.
        eps: see `log_ratio_loss`.
        kind: see `log_ratio_loss`.
        pair_ids: (N,) long, optional: placeholder rows (negative id) are left out.

    Returns:
        Scalar mean over i (over the real rows; 0 when none).
    """
    _check_embeddings(
        image_embeds=image_embeds,
        text_embeds=text_embeds,
        aug_image_embeds=aug_image_embeds,
        teacher_image_embeds=teacher_image_embeds,
        teacher_text_embeds=teacher_text_embeds,
        teacher_aug_image_embeds=teacher_aug_image_embeds,
    )
    distances = (
        _row_distance(text_embeds, image_embeds),  # (N,)
        _row_distance(text_embeds, aug_image_embeds),
        _row_distance(teacher_text_embeds, teacher_image_embeds),
        _row_distance(teacher_text_embeds, teacher_aug_image_embeds),
    )
    if pair_ids is not None:
        real = checked_pair_ids(pair_ids, image_embeds.shape[0], image_embeds.device) >= 0  # (N,)
        if not bool(real.any()):
            return zero_loss(distances[0])
        distances = tuple(distance[real] for distance in distances)
    return log_ratio_loss(*distances, eps=eps, kind=kind)


def _anchored_off_diagonal_loss(
    anchor: tuple[str, torch.Tensor],
    other: tuple[str, torch.Tensor],
    teacher_anchor: torch.Tensor,
    teacher_other: torch.Tensor,
    eps: float,
    kind: str,
    pair_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Log-ratio loss of d(a_i, o_i) / d(a_i, o_j) for every i and j ≠ i, mean over N(N - 1).

    With `pair_ids`, j ranges over the rows of another pair than i (j ≠ i is id_j ≠ id_i), i and j both real rows;
    the mean is over those (i, j), and 0 when there is none.

    `anchor` and `other` are (argument name, (N, D) tensor); the names make shape errors readable.
    """
    (anchor_name, anchor), (other_name, other) = anchor, other
    _check_embeddings(
        **{anchor_name: anchor, other_name: other},
        **{f"teacher_{anchor_name}": teacher_anchor, f"teacher_{other_name}": teacher_other},
    )
    n = anchor.shape[0]
    if n < 2:
        raise ValueError(f"the negative and noisy distillation terms need >= 2 pairs in the global batch, got {n}")
    if pair_ids is None:
        off_diagonal = ~torch.eye(n, dtype=torch.bool, device=anchor.device)  # (N, N)
    else:
        off_diagonal = ~same_pair_mask(
            checked_pair_ids(pair_ids, n, anchor.device)
        )  # (N, N): other pairs, real rows only
    student = pairwise_distance(anchor, other)  # (N, N)
    if pair_ids is not None and not bool(off_diagonal.any()):
        return zero_loss(student)
    teacher = pairwise_distance(teacher_anchor, teacher_other)
    # Row i's positive distance broadcast against each of its N - 1 off-diagonal distances.
    return log_ratio_loss(
        student.diagonal()[:, None].expand(n, n)[off_diagonal],  # (N(N-1),)
        student[off_diagonal],
        teacher.diagonal()[:, None].expand(n, n)[off_diagonal],
        teacher[off_diagonal],
        eps=eps,
        kind=kind,
    )


def distill_neg_loss(
    text_embeds: torch.Tensor,
    aug_image_embeds: torch.Tensor,
    teacher_text_embeds: torch.Tensor,
    teacher_aug_image_embeds: torch.Tensor,
    eps: float = 1e-6,
    kind: str = "l2",
    pair_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_neg (docs/method.md §3, paper Eq. 8): an augmented image may be relevant to another text.

    Anchor ũ_i: student ratio d(ũ_i, v_i) / d(ũ_i, v_j) against teacher d(ū̃_i, v̄_i) / d(ū̃_i, v̄_j).

    Args:
        text_embeds, aug_image_embeds: (N, D) normalised student v, ũ.
        teacher_text_embeds, teacher_aug_image_embeds: (N, D) v̄, ū̃.
        eps: see `log_ratio_loss`.
        kind: see `log_ratio_loss`.
        pair_ids: (N,) long, optional: see `_anchored_off_diagonal_loss`.

    Returns:
        Scalar mean over the N(N - 1) pairs (i, j ≠ i).
    """
    return _anchored_off_diagonal_loss(
        ("aug_image_embeds", aug_image_embeds),
        ("text_embeds", text_embeds),
        teacher_aug_image_embeds,
        teacher_text_embeds,
        eps,
        kind,
        pair_ids,
    )


def distill_noisy_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    teacher_image_embeds: torch.Tensor,
    teacher_text_embeds: torch.Tensor,
    eps: float = 1e-6,
    kind: str = "l2",
    pair_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_noisy (docs/method.md §3, paper Eq. 9): noisy original pairs.

    Anchor v_i: student ratio d(v_i, u_i) / d(v_i, u_j) against teacher d(v̄_i, ū_i) / d(v̄_i, ū_j).

    Args:
        image_embeds, text_embeds: (N, D) normalised student u, v.
        teacher_image_embeds, teacher_text_embeds: (N, D) ū, v̄.
        eps: see `log_ratio_loss`.
        kind: see `log_ratio_loss`.
        pair_ids: (N,) long, optional: see `_anchored_off_diagonal_loss`.

    Returns:
        Scalar mean over the N(N - 1) pairs (i, j ≠ i).
    """
    return _anchored_off_diagonal_loss(
        ("text_embeds", text_embeds),
        ("image_embeds", image_embeds),
        teacher_text_embeds,
        teacher_image_embeds,
        eps,
        kind,
        pair_ids,
    )


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
