# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Compositionality (SugarCrepe, Hsieh et al. 2023): does the image score its true caption above a hard
negative that swaps, replaces or adds an object, attribute or relation?"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def compositionality_metrics(
    image_features: torch.Tensor,
    caption_features: torch.Tensor,
    negative_features: torch.Tensor,
    categories: Sequence[str],
) -> dict:
    r"""
    The fraction of samples whose image is closer to the caption than to the negative caption.

    Args:
        image_features (`torch.Tensor` of shape `(N, P)`): L2-normalised embedding of each sample's image
            (index the distinct images' embeddings with `image_index`).
        caption_features (`torch.Tensor` of shape `(N, P)`): L2-normalised true captions.
        negative_features (`torch.Tensor` of shape `(N, P)`): L2-normalised negative captions.
        categories (`Sequence[str]`): the category of each sample (e.g. `"replace_obj"`).

    Returns:
        `dict` with one accuracy per category (sorted by name), `overall` (over all samples),
        `category_mean` (the unweighted mean of the categories) and `num_samples`.
    """
    shapes = {tuple(t.shape) for t in (image_features, caption_features, negative_features)}
    if len(shapes) != 1 or image_features.dim() != 2:
        raise ValueError(f"image, caption and negative features must share one (N, P) shape, got {sorted(shapes)}")
    if len(categories) != image_features.shape[0]:
        raise ValueError(f"categories has {len(categories)} entries for {image_features.shape[0]} samples")
    if not categories:
        raise ValueError("compositionality_metrics got no samples")
    reserved = {"category_mean", "overall", "num_samples"} & set(categories)
    if reserved:
        raise ValueError(f"category names {sorted(reserved)} are reserved for the summary metrics")
    positive = (image_features * caption_features.to(image_features)).sum(dim=1)  # (N,)
    negative = (image_features * negative_features.to(image_features)).sum(dim=1)  # (N,)
    correct = (positive > negative).double()  # (N,)
    metrics = {}
    for category in sorted(set(categories)):
        mask = torch.tensor([c == category for c in categories], device=correct.device)
        metrics[category] = correct[mask].mean().item()
    metrics["category_mean"] = sum(metrics.values()) / len(metrics)
    metrics["overall"] = correct.mean().item()
    metrics["num_samples"] = len(categories)
    return metrics


__all__ = ["compositionality_metrics"]
