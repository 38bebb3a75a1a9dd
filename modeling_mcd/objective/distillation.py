# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""The distillation terms of the MCD objective (docs/method.md §3): distances, the log-ratio loss, L_pos, L_neg
and L_noisy, as pure functions (re-exported by `modeling_mcd.objective.losses`, with the other terms).

They take GLOBAL, L2-normalised embeddings of shape (N, D), student u, v, ũ and teacher ū, v̄, ū̃, and like every
term of `modeling_mcd.objective.losses` optional `pair_ids` (N,) and `anchor_rows` (R,) (the local loss: only the terms
anchored at those rows, divided by the normaliser of the whole batch; see `modeling_mcd.objective.losses`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .pairs import (
    check_embeddings,
    checked_anchor_rows,
    checked_pair_ids,
    negative_pair_count,
    real_row_count,
    rows_of,
    same_pair_mask,
    zero_loss,
)

# Regression of the log-ratio difference against 0 (docs/method.md §3, option `distill_loss`).
_DISTILL_REGRESSIONS = {"l2": F.mse_loss, "l1": F.l1_loss, "smooth_l1": F.smooth_l1_loss}
#: The choices of `distill_loss`.
DISTILL_LOSSES = tuple(_DISTILL_REGRESSIONS)
# Clamp of 2 - 2cos before the square root: keeps d(a, a) finite AND its gradient finite (sqrt'(0) = inf).
_MIN_SQUARED_DISTANCE = 1e-12


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
    normaliser: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Log-ratio loss (docs/method.md §3, paper Eq. 6; Kim et al., CVPR 2019): learn the teacher's distance ratios.

    Args:
        student_ab: distances d_s(a, b), any shape broadcastable with the others.
        student_cd: distances d_s(c, d).
        teacher_ab: distances d_t(a, b) (no gradient expected).
        teacher_cd: distances d_t(c, d).
        eps: added to every distance before the log.
        kind: `l2` (squared), `l1` (absolute) or `smooth_l1` (torch's smooth L1 against 0).
        normaliser: divide the sum by this instead of taking the mean (a subset's share of a larger mean).

    Returns:
        Scalar mean over all elements of the regressed difference
        `log((d_s(a,b)+ε)/(d_s(c,d)+ε)) - log((d_t(a,b)+ε)/(d_t(c,d)+ε))` (or its sum / `normaliser`).
    """
    if kind not in _DISTILL_REGRESSIONS:
        raise ValueError(f"distill_loss must be one of {sorted(_DISTILL_REGRESSIONS)}, got {kind!r}")
    student_log_ratio = torch.log(student_ab + eps) - torch.log(student_cd + eps)
    teacher_log_ratio = torch.log(teacher_ab + eps) - torch.log(teacher_cd + eps)
    difference = student_log_ratio - teacher_log_ratio
    if normaliser is None:
        return _DISTILL_REGRESSIONS[kind](difference, torch.zeros_like(difference))
    return _DISTILL_REGRESSIONS[kind](difference, torch.zeros_like(difference), reduction="sum") / normaliser


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
    anchor_rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_pos (docs/method.md §3, paper Eq. 7): misalignment inside a positive pair, anchored at the text v_i.

    Student ratio d(v_i, u_i) / d(v_i, ũ_i) against teacher ratio d(v̄_i, ū_i) / d(v̄_i, ū̃_i).

    Args:
        image_embeds, text_embeds, aug_image_embeds: (N, D) normalised student u, v, ũ.
        teacher_image_embeds, teacher_text_embeds, teacher_aug_image_embeds: (N, D) ū, v̄, ū̃.
        eps: see `log_ratio_loss`.
        kind: see `log_ratio_loss`.
        pair_ids: (N,) long, optional: placeholder rows (negative id) are left out.
        anchor_rows: (R,) long, optional: only the rows i given, still divided by the number of real rows of the
            whole batch (see the module docstring).

    Returns:
        Scalar mean over i (over the real rows; 0 when none).
    """
    check_embeddings(
        image_embeds=image_embeds,
        text_embeds=text_embeds,
        aug_image_embeds=aug_image_embeds,
        teacher_image_embeds=teacher_image_embeds,
        teacher_text_embeds=teacher_text_embeds,
        teacher_aug_image_embeds=teacher_aug_image_embeds,
    )
    n = image_embeds.shape[0]
    pair_ids = checked_pair_ids(pair_ids, n, image_embeds.device)
    rows = checked_anchor_rows(anchor_rows, n, image_embeds.device)
    text, teacher_text = rows_of(text_embeds, rows), rows_of(teacher_text_embeds, rows)  # (R, D)
    distances = (
        _row_distance(text, rows_of(image_embeds, rows)),  # (R,)
        _row_distance(text, rows_of(aug_image_embeds, rows)),
        _row_distance(teacher_text, rows_of(teacher_image_embeds, rows)),
        _row_distance(teacher_text, rows_of(teacher_aug_image_embeds, rows)),
    )
    if pair_ids is not None:
        real = rows_of(pair_ids, rows) >= 0  # (R,)
        if rows is None and not bool(real.any()):
            return zero_loss(distances[0])
        distances = tuple(distance[real] for distance in distances)
    if rows is None:
        return log_ratio_loss(*distances, eps=eps, kind=kind)
    return log_ratio_loss(*distances, eps=eps, kind=kind, normaliser=real_row_count(pair_ids, n, distances[0]))


def _anchored_off_diagonal_loss(
    anchor: tuple[str, torch.Tensor],
    other: tuple[str, torch.Tensor],
    teacher_anchor: torch.Tensor,
    teacher_other: torch.Tensor,
    eps: float,
    kind: str,
    pair_ids: torch.Tensor | None = None,
    anchor_rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Log-ratio loss of d(a_i, o_i) / d(a_i, o_j) for every i and j ≠ i, mean over N(N - 1).

    With `pair_ids`, j ranges over the rows of another pair than i (j ≠ i is id_j ≠ id_i), i and j both real rows;
    the mean is over those (i, j), and 0 when there is none. With `anchor_rows`, i ranges over those rows only, and
    the sum is still divided by the number of (i, j) of the whole batch (see the module docstring).

    `anchor` and `other` are (argument name, (N, D) tensor); the names make shape errors readable.
    """
    (anchor_name, anchor), (other_name, other) = anchor, other
    check_embeddings(
        **{anchor_name: anchor, other_name: other},
        **{f"teacher_{anchor_name}": teacher_anchor, f"teacher_{other_name}": teacher_other},
    )
    n = anchor.shape[0]
    if n < 2:
        raise ValueError(f"the negative and noisy distillation terms need >= 2 pairs in the global batch, got {n}")
    pair_ids = checked_pair_ids(pair_ids, n, anchor.device)
    rows = checked_anchor_rows(anchor_rows, n, anchor.device)
    columns = torch.arange(n, device=anchor.device)  # (N,)
    anchors = columns if rows is None else rows  # (R,)
    if pair_ids is None:
        off_diagonal = anchors[:, None] != columns[None, :]  # (R, N)
    else:
        off_diagonal = ~same_pair_mask(pair_ids, rows)  # (R, N): other pairs, real rows only
    student = pairwise_distance(rows_of(anchor, rows), other)  # (R, N)
    if rows is None and pair_ids is not None and not bool(off_diagonal.any()):
        return zero_loss(student)
    teacher = pairwise_distance(rows_of(teacher_anchor, rows), teacher_other)  # (R, N)
    normaliser = None
    if rows is not None:  # the number of (i, j) terms of the whole batch
        normaliser = (n * (n - 1) if pair_ids is None else negative_pair_count(pair_ids)) * student.new_ones(())

    def positive(distances: torch.Tensor) -> torch.Tensor:
        # Row i's positive distance d(a_i, o_i), broadcast against each of its off-diagonal distances: (R, N) -> (M,)
        return distances.gather(1, anchors[:, None]).expand_as(distances)[off_diagonal]

    return log_ratio_loss(
        positive(student),
        student[off_diagonal],  # (M,)
        positive(teacher),
        teacher[off_diagonal],
        eps=eps,
        kind=kind,
        normaliser=normaliser,
    )


def distill_neg_loss(
    text_embeds: torch.Tensor,
    aug_image_embeds: torch.Tensor,
    teacher_text_embeds: torch.Tensor,
    teacher_aug_image_embeds: torch.Tensor,
    eps: float = 1e-6,
    kind: str = "l2",
    pair_ids: torch.Tensor | None = None,
    anchor_rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_neg (docs/method.md §3, paper Eq. 8): an augmented image may be relevant to another text.

    Anchor ũ_i: student ratio d(ũ_i, v_i) / d(ũ_i, v_j) against teacher d(ū̃_i, v̄_i) / d(ū̃_i, v̄_j).

    Args:
        text_embeds, aug_image_embeds: (N, D) normalised student v, ũ.
        teacher_text_embeds, teacher_aug_image_embeds: (N, D) v̄, ū̃.
        eps: see `log_ratio_loss`.
        kind: see `log_ratio_loss`.
        pair_ids: (N,) long, optional: see `_anchored_off_diagonal_loss`.
        anchor_rows: (R,) long, optional: only the anchors i given (see the module docstring).

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
        anchor_rows,
    )


def distill_noisy_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    teacher_image_embeds: torch.Tensor,
    teacher_text_embeds: torch.Tensor,
    eps: float = 1e-6,
    kind: str = "l2",
    pair_ids: torch.Tensor | None = None,
    anchor_rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_noisy (docs/method.md §3, paper Eq. 9): noisy original pairs.

    Anchor v_i: student ratio d(v_i, u_i) / d(v_i, u_j) against teacher d(v̄_i, ū_i) / d(v̄_i, ū_j).

    Args:
        image_embeds, text_embeds: (N, D) normalised student u, v.
        teacher_image_embeds, teacher_text_embeds: (N, D) ū, v̄.
        eps: see `log_ratio_loss`.
        kind: see `log_ratio_loss`.
        pair_ids: (N,) long, optional: see `_anchored_off_diagonal_loss`.
        anchor_rows: (R,) long, optional: only the anchors i given (see the module docstring).

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
        anchor_rows,
    )


__all__ = [
    "DISTILL_LOSSES",
    "distill_neg_loss",
    "distill_noisy_loss",
    "distill_pos_loss",
    "log_ratio_loss",
    "pairwise_distance",
]
