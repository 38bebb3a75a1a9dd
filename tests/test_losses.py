# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""modeling_mcd.objective.losses against naive loop references (tiny seeded inputs, odd sizes)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import EMBED_DIM, EMBED_ROWS, unit
from transformers.models.clip.modeling_clip import image_text_contrastive_loss

from modeling_mcd.objective.losses import (
    clip_loss,
    distill_neg_loss,
    distill_noisy_loss,
    distill_pos_loss,
    log_ratio_loss,
    mlm_loss,
    mp_nce_loss,
    pairwise_distance,
    progressive_alpha,
)
from modeling_mcd.objective.pairs import PADDING_PAIR_ID

N, D = EMBED_ROWS, EMBED_DIM


# ---- naive references -------------------------------------------------------------------------


def ref_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return math.sqrt(sum((float(x) - float(y)) ** 2 for x, y in zip(a, b)))


def ref_regress(x: float, kind: str) -> float:
    if kind == "l2":
        return x * x
    if kind == "l1":
        return abs(x)
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5  # smooth_l1 with beta = 1


def ref_log_ratio(ds_ab: float, ds_cd: float, dt_ab: float, dt_cd: float, eps: float, kind: str) -> float:
    x = math.log((ds_ab + eps) / (ds_cd + eps)) - math.log((dt_ab + eps) / (dt_cd + eps))
    return ref_regress(x, kind)


def ref_unified(u, v, aug, scale):
    rows = list(u) + list(v) + list(aug)
    sim = [[scale * float(a @ b) for b in rows] for a in rows]
    return rows, sim


def ref_mp_nce(u, v, aug, scale: float, aug_weight: float, ids: list[int] | None = None) -> float:
    """With `ids`, rows of one id are no negatives of each other and rows of a negative id take no part."""
    n = len(u)
    ids = list(range(n)) if ids is None else ids
    rows, sim = ref_unified(u, v, aug, scale)
    total, weight_sum = 0.0, 0.0
    for e in range(3 * n):
        if ids[e % n] < 0:
            continue
        for p in range(3 * n):
            if p == e or p % n != e % n:
                continue
            negatives = sum(math.exp(sim[e][q]) for q in range(3 * n) if ids[q % n] >= 0 and ids[q % n] != ids[e % n])
            term = -math.log(math.exp(sim[e][p]) / (math.exp(sim[e][p]) + negatives))
            w = aug_weight if (e // n == 2 or p // n == 2) else 1.0
            total += w * term
            weight_sum += w
    return total / weight_sum


def ref_supcon(u, v, aug, scale: float) -> float:
    """SupCon: all positives of e share one denominator over every other row."""
    n = len(u)
    rows, sim = ref_unified(u, v, aug, scale)
    total = 0.0
    for e in range(3 * n):
        denominator = sum(math.exp(sim[e][a]) for a in range(3 * n) if a != e)
        positives = [p for p in range(3 * n) if p != e and p % n == e % n]
        total += -sum(math.log(math.exp(sim[e][p]) / denominator) for p in positives) / len(positives)
    return total / (3 * n)


def ref_pos(e: dict, eps: float, kind: str, rows) -> float:
    """L_pos: the mean over `rows` of the log-ratio of d(v_i, u_i) / d(v_i, ũ_i), student against teacher."""
    terms = [
        ref_log_ratio(
            ref_distance(e["text"][i], e["image"][i]),
            ref_distance(e["text"][i], e["aug"][i]),
            ref_distance(e["t_text"][i], e["t_image"][i]),
            ref_distance(e["t_text"][i], e["t_aug"][i]),
            eps,
            kind,
        )
        for i in rows
    ]
    return sum(terms) / len(terms)


def ref_anchored(anchor, other, t_anchor, t_other, eps, kind, ids: list[int] | None = None) -> float:
    """Over every i and j ≠ i; with `ids`, over the real rows i, j of different ids."""
    n = len(anchor)
    ids = list(range(n)) if ids is None else ids
    terms = [
        ref_log_ratio(
            ref_distance(anchor[i], other[i]),
            ref_distance(anchor[i], other[j]),
            ref_distance(t_anchor[i], t_other[i]),
            ref_distance(t_anchor[i], t_other[j]),
            eps,
            kind,
        )
        for i in range(n)
        for j in range(n)
        if ids[i] >= 0 and ids[j] >= 0 and ids[j] != ids[i]
    ]
    return sum(terms) / len(terms)


# ---- contrastive ------------------------------------------------------------------------------


@pytest.mark.parametrize("aug_weight", [1.0, 0.3, 0.0])
def test_mp_nce_matches_loop(embeds, aug_weight):
    scale = torch.tensor(4.3, dtype=torch.float64, requires_grad=True)
    loss = mp_nce_loss(embeds["image"], embeds["text"], embeds["aug"], scale, aug_weight)
    expected = ref_mp_nce(embeds["image"], embeds["text"], embeds["aug"], 4.3, aug_weight)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    loss.backward()
    assert scale.grad is not None and torch.isfinite(scale.grad) and scale.grad != 0


def test_mp_nce_without_aug_weight_is_one_positive_info_nce(embeds):
    """w_aug = 0 leaves one positive per u/v row: a plain cross-entropy over that row's other columns."""
    u, v, aug = embeds["image"], embeds["text"], embeds["aug"]
    embeddings = torch.cat([u, v, aug])  # (3N, D)
    logits = 2.5 * embeddings @ embeddings.t()
    rows = torch.arange(2 * N)
    excluded = torch.zeros(2 * N, 3 * N, dtype=torch.bool)
    excluded[rows, rows] = True  # self
    excluded[rows, 2 * N + rows % N] = True  # the row's ũ positive, weighted 0
    targets = (rows + N) % (2 * N)  # u_k -> v_k, v_k -> u_k
    expected = F.cross_entropy(logits[: 2 * N].masked_fill(excluded, float("-inf")), targets)
    torch.testing.assert_close(mp_nce_loss(u, v, aug, torch.tensor(2.5, dtype=torch.float64), 0.0), expected)


def test_mp_nce_differs_from_supcon(embeds):
    """MP-NCE drops the other positive from each denominator, so every term is smaller than SupCon's."""
    args = (embeds["image"], embeds["text"], embeds["aug"])
    mp = mp_nce_loss(*args, torch.tensor(3.0, dtype=torch.float64), 1.0).item()
    supcon = ref_supcon(*args, 3.0)
    assert mp == pytest.approx(ref_mp_nce(*args, 3.0, 1.0), rel=1e-10)
    assert mp < supcon - 0.05


def test_mp_nce_requires_aug(embeds):
    with pytest.raises(ValueError, match="aug_image_embeds"):
        mp_nce_loss(embeds["image"], embeds["text"], None, torch.tensor(1.0))
    with pytest.raises(ValueError, match="aug_image_embeds"):
        mp_nce_loss(embeds["image"], embeds["text"], embeds["aug"][:3], torch.tensor(1.0))


# ---- distances and log-ratio ------------------------------------------------------------------


def test_pairwise_distance_matches_cdist_and_has_finite_gradient_at_zero(embeds):
    a, b = embeds["image"], unit(3, D, seed=9)
    torch.testing.assert_close(pairwise_distance(a, b), torch.cdist(a, b))
    x = embeds["text"][:2].clone().requires_grad_(True)
    distances = pairwise_distance(x, x)  # diagonal: identical vectors
    assert torch.all(distances.diagonal() < 1e-5)
    distances.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("kind", ["l2", "l1", "smooth_l1"])
def test_log_ratio_loss_matches_loop(kind):
    generator = torch.Generator().manual_seed(4)
    ds_ab, ds_cd, dt_ab, dt_cd = torch.rand(4, 3, 5, generator=generator, dtype=torch.float64) * 2
    dt_ab = dt_ab * 10  # some differences above 1, so smooth_l1's linear branch is exercised
    expected = [
        ref_log_ratio(float(ds_ab[i, j]), float(ds_cd[i, j]), float(dt_ab[i, j]), float(dt_cd[i, j]), 1e-6, kind)
        for i in range(3)
        for j in range(5)
    ]
    got = log_ratio_loss(ds_ab, ds_cd, dt_ab, dt_cd, eps=1e-6, kind=kind)
    assert got.item() == pytest.approx(sum(expected) / len(expected), rel=1e-10)


def test_log_ratio_loss_rejects_unknown_kind():
    with pytest.raises(ValueError, match="distill_loss"):
        log_ratio_loss(torch.ones(2), torch.ones(2), torch.ones(2), torch.ones(2), kind="l3")


@pytest.mark.parametrize("kind", ["l2", "smooth_l1"])
def test_distill_terms_match_loops(embeds, kind):
    e = embeds
    pos = distill_pos_loss(e["image"], e["text"], e["aug"], e["t_image"], e["t_text"], e["t_aug"], 1e-6, kind)
    assert pos.item() == pytest.approx(ref_pos(e, 1e-6, kind, range(N)), rel=1e-8)
    neg = distill_neg_loss(e["text"], e["aug"], e["t_text"], e["t_aug"], 1e-6, kind)
    assert neg.item() == pytest.approx(ref_anchored(e["aug"], e["text"], e["t_aug"], e["t_text"], 1e-6, kind), rel=1e-8)
    noisy = distill_noisy_loss(e["image"], e["text"], e["t_image"], e["t_text"], 1e-6, kind)
    expected_noisy = ref_anchored(e["text"], e["image"], e["t_text"], e["t_image"], 1e-6, kind)
    assert noisy.item() == pytest.approx(expected_noisy, rel=1e-8)


def _all_distill(student: dict, teacher: dict) -> torch.Tensor:
    s, t = student, teacher
    return torch.stack(
        [
            distill_pos_loss(s["image"], s["text"], s["aug"], t["image"], t["text"], t["aug"]),
            distill_neg_loss(s["text"], s["aug"], t["text"], t["aug"]),
            distill_noisy_loss(s["image"], s["text"], t["image"], t["text"]),
        ]
    )


def test_distill_terms_vanish_for_identical_teacher_and_grow_with_divergence(embeds):
    student = {k: embeds[k] for k in ("image", "text", "aug")}
    noise = unit(3, N, D, seed=11)

    def teacher(strength: float) -> dict:
        return {k: F.normalize(student[k] + strength * noise[i], dim=-1) for i, k in enumerate(student)}

    torch.testing.assert_close(_all_distill(student, teacher(0.0)), torch.zeros(3, dtype=torch.float64))
    small, large = _all_distill(student, teacher(0.05)), _all_distill(student, teacher(1.0))
    assert torch.all(small > 0) and torch.all(large > 10 * small)


def test_distill_needs_two_pairs(embeds):
    one = {k: v[:1] for k, v in embeds.items()}
    with pytest.raises(ValueError, match=">= 2 pairs"):
        distill_neg_loss(one["text"], one["aug"], one["t_text"], one["t_aug"])


# ---- MLM and α --------------------------------------------------------------------------------


def test_mlm_loss_matches_cross_entropy_in_one_process():
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(3, 5, 11, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 11, (3, 5), generator=generator)
    labels[torch.rand(3, 5, generator=generator) < 0.6] = -100
    assert (labels != -100).sum() > 0
    expected = F.cross_entropy(logits.reshape(-1, 11), labels.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(mlm_loss(logits, labels), expected)
    # No masked token at all: 0 with a finite gradient, not cross_entropy's NaN.
    logits.requires_grad_(True)
    empty = mlm_loss(logits, torch.full((3, 5), -100))
    empty.backward()
    assert empty.item() == 0.0 and torch.isfinite(logits.grad).all()
    with pytest.raises(ValueError, match="mlm_labels"):
        mlm_loss(logits, labels[:, :4])


def test_progressive_alpha():
    assert progressive_alpha(0, 10) == 0.0
    assert progressive_alpha(10, 10) == 1.0
    assert progressive_alpha(5, 10) == pytest.approx(0.5)
    assert progressive_alpha(3, 10) == pytest.approx((1 - math.cos(math.pi * 0.3)) / 2)
    assert progressive_alpha(-4, 10) == 0.0 and progressive_alpha(25, 10) == 1.0  # clamped
    assert progressive_alpha(7, 10, "constant") == 0.0
    with pytest.raises(ValueError, match="aug_nce_schedule"):
        progressive_alpha(1, 10, "linear")
    with pytest.raises(ValueError, match="total_steps"):
        progressive_alpha(1, 0)


# ---- pair ids -----------------------------------------------------------------------------------
# Rows 0 and 2 come from one image (a duplicate, or two captions of it), row 3 is a placeholder (a sample found bad
# while decoding); rows 1 and 4 are pairs of their own.
PAIR_IDS = torch.tensor([7, 3, 7, -1, 12])


def ref_clip_with_ids(logits: torch.Tensor, ids: list[int]) -> float:
    """Mean over both directions of -log softmax of the row's own column, the other columns of its pair and every
    placeholder column left out; placeholder rows are no anchors."""
    n = len(ids)

    def direction(sim) -> float:
        terms = []
        for i in range(n):
            if ids[i] < 0:
                continue
            kept = [j for j in range(n) if j == i or (ids[j] >= 0 and ids[j] != ids[i])]
            terms.append(-float(sim[i][i]) + math.log(sum(math.exp(float(sim[i][j])) for j in kept)))
        return sum(terms) / len(terms)

    return (direction(logits) + direction(logits.t())) / 2


def _pair_terms(e: dict, pair_ids, kind: str = "l2", aug_weight: float = 0.6) -> torch.Tensor:
    scale = torch.tensor(3.7, dtype=torch.float64)
    return torch.stack(
        [
            mp_nce_loss(e["image"], e["text"], e["aug"], scale, aug_weight, pair_ids=pair_ids),
            clip_loss(3.7 * e["text"] @ e["image"].t(), pair_ids),
            distill_pos_loss(
                e["image"], e["text"], e["aug"], e["t_image"], e["t_text"], e["t_aug"], 1e-6, kind, pair_ids
            ),
            distill_neg_loss(e["text"], e["aug"], e["t_text"], e["t_aug"], 1e-6, kind, pair_ids),
            distill_noisy_loss(e["image"], e["text"], e["t_image"], e["t_text"], 1e-6, kind, pair_ids),
        ]
    )


def test_all_distinct_pair_ids_give_exactly_the_plain_loss(embeds):
    plain = _pair_terms(embeds, None)
    assert plain[1] == image_text_contrastive_loss(3.7 * embeds["text"] @ embeds["image"].t())
    distinct = torch.tensor([40, 2, 9, 0, 17])  # any distinct non-negative ids, in any order
    assert torch.equal(_pair_terms(embeds, distinct), plain)


@pytest.mark.parametrize("kind", ["l2", "smooth_l1"])
def test_pair_ids_match_loops(embeds, kind):
    e, ids = embeds, PAIR_IDS.tolist()
    got = _pair_terms(e, PAIR_IDS, kind)
    expected = [
        ref_mp_nce(e["image"], e["text"], e["aug"], 3.7, 0.6, ids),
        ref_clip_with_ids(3.7 * e["text"] @ e["image"].t(), ids),
        ref_pos(e, 1e-6, kind, [i for i in range(N) if ids[i] >= 0]),
        ref_anchored(e["aug"], e["text"], e["t_aug"], e["t_text"], 1e-6, kind, ids),
        ref_anchored(e["text"], e["image"], e["t_text"], e["t_image"], 1e-6, kind, ids),
    ]
    assert got.tolist() == pytest.approx(expected, rel=1e-9)
    # The ids do change every term: the same rows as pairs of their own give other values.
    assert not torch.isclose(got, _pair_terms(e, None, kind)).any()


def test_a_placeholder_row_takes_no_part(embeds):
    """Whatever the towers make of a placeholder row (a skipped sample's blank image and empty caption), no term
    changes; and a batch of placeholders only gives 0 with finite gradients."""
    other = {k: v.clone() for k, v in embeds.items()}
    for k in other:
        other[k][3] = unit(D, seed=20 + len(k))
    torch.testing.assert_close(_pair_terms(other, PAIR_IDS), _pair_terms(embeds, PAIR_IDS), rtol=1e-12, atol=0)

    student = {k: embeds[k].clone().requires_grad_(True) for k in ("image", "text", "aug")}
    terms = _pair_terms({**embeds, **student}, torch.full((N,), PADDING_PAIR_ID))
    assert torch.equal(terms, torch.zeros(5, dtype=torch.float64))
    terms.sum().backward()
    assert all(torch.isfinite(leaf.grad).all() for leaf in student.values())


def test_pair_ids_must_give_one_id_per_row(embeds):
    with pytest.raises(ValueError, match=r"pair_ids must have shape \(5,\)"):
        _pair_terms(embeds, PAIR_IDS[:4])
