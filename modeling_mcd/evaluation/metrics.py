# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Classification metrics on a score matrix, shared by zero-shot and linear-probe evaluation.

Written in torch rather than with scikit-learn so that the trainer can run them on the accelerator
on its own eval sets; the tests check them against `sklearn.metrics.top_k_accuracy_score`.
"""

from __future__ import annotations

import torch


def check_labels(labels: torch.Tensor, num_rows: int, num_classes: int | None, name: str = "labels") -> torch.Tensor:
    """Return `labels` as a 1-D LongTensor of indices in [0, num_classes), or raise `ValueError` naming what is
    wrong; `num_classes=None` checks only the lower bound."""
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.shape[0] != num_rows:
        raise ValueError(f"{name} must have shape ({num_rows},), got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class indices, got dtype {labels.dtype}")
    upper = num_classes if num_classes is not None else float("inf")
    if num_rows and (labels.min() < 0 or labels.max() >= upper):
        raise ValueError(f"{name} must lie in [0, {num_classes}), got values in [{labels.min()}, {labels.max()}]")
    return labels.long()


def classification_metrics(scores: torch.Tensor, labels: torch.Tensor, topk: tuple[int, ...] = (1, 5)) -> dict:
    r"""
    Top-k accuracy and mean per-class accuracy of a score matrix.

    Args:
        scores (`torch.Tensor` of shape `(N, C)`): higher means more likely (logits or probabilities).
        labels (`torch.LongTensor` of shape `(N,)`): the true class of each row.
        topk (`tuple[int]`, *optional*, defaults to `(1, 5)`): k is capped at C, as in CLIP's evaluation,
            so `top5` of a 3-class problem is its top-3 accuracy (1.0).

    Returns:
        `dict` with `top{k}` for each k and `mean_per_class_accuracy` (top-1 recall averaged over the
        classes present in `labels`), all fractions in [0, 1], and `num_samples`.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must have shape (N, C), got {tuple(scores.shape)}")
    num_samples, num_classes = scores.shape
    if num_samples == 0:
        raise ValueError("scores has no rows")
    labels = check_labels(labels, num_samples, num_classes).to(scores.device)
    ranked = scores.topk(min(max(topk), num_classes), dim=1).indices  # (N, K)
    hits = ranked == labels[:, None]  # (N, K): at most one True per row
    metrics = {f"top{k}": hits[:, : min(k, num_classes)].any(dim=1).double().mean().item() for k in topk}

    correct = hits[:, 0].double()  # (N,)
    per_class_hits = torch.bincount(labels, weights=correct, minlength=num_classes)  # (C,)
    per_class_count = torch.bincount(labels, minlength=num_classes).double()  # (C,)
    present = per_class_count > 0
    metrics["mean_per_class_accuracy"] = (per_class_hits[present] / per_class_count[present]).mean().item()
    metrics["num_samples"] = num_samples
    return metrics


def classification_chance(num_classes: int, topk: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """What a random guess scores, under the names `classification_metrics` reports (k capped at C)."""
    chance = {f"top{k}": min(k, num_classes) / num_classes for k in topk}
    chance["mean_per_class_accuracy"] = 1 / num_classes
    return chance


__all__ = ["check_labels", "classification_chance", "classification_metrics"]
