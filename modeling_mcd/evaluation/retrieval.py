# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Image–text retrieval (Flickr30k / COCO protocol) with several captions per image.

Image→text: an image's rank is that of its best-ranked caption, so R@K counts a hit if ANY of its
captions is in the top K. Text→image: each caption has exactly one correct image. Ranks are 1-based
and count the candidates scored strictly higher than the correct one. The similarity matrix is built
one chunk of rows at a time, so 5,000 × 25,000 (COCO) never sits in memory at once.
"""

from __future__ import annotations

from math import comb

import torch

RECALL_AT = (1, 5, 10)


def retrieval_chance(num_images: int, num_texts: int, recall_at: tuple[int, ...] = RECALL_AT) -> dict[str, float]:
    r"""
    What a random ranking scores, under the names `retrieval_metrics` reports.

    Text→image: the one correct image is at any of I positions, so R@K = K / I. Image→text: an image with c
    captions (c = T // I) hits when any of them is among the first K of T, so R@K = 1 − C(T − c, K) / C(T, K),
    and its expected rank is that of the best of c random positions, (T + 1) / (c + 1).

    Args:
        num_images (`int`): I.
        num_texts (`int`): T, a multiple of I in the standard protocols (5 captions per image).
        recall_at (`tuple[int]`, *optional*, defaults to `(1, 5, 10)`)

    Returns:
        `dict` with `text_to_image_R@{k}`, `image_to_text_R@{k}` and both mean ranks.
    """
    per_image = max(num_texts // num_images, 1)
    chance: dict[str, float] = {}
    for k in recall_at:
        # C(T - c, K) / C(T, K): the chance that none of the c captions is among K; K >= T always hits.
        chance[f"image_to_text_R@{k}"] = (
            1 - comb(num_texts - per_image, k) / comb(num_texts, k) if k < num_texts else 1.0
        )
        chance[f"text_to_image_R@{k}"] = min(k, num_images) / num_images
    chance["image_to_text_mean_rank"] = (num_texts + 1) / (per_image + 1)
    chance["text_to_image_mean_rank"] = (num_images + 1) / 2
    return chance


def _check(image_features: torch.Tensor, text_features: torch.Tensor, text_to_image: torch.Tensor) -> torch.Tensor:
    if image_features.dim() != 2 or text_features.dim() != 2 or image_features.shape[1] != text_features.shape[1]:
        raise ValueError(
            f"image_features (I, P) and text_features (T, P) do not fit: {tuple(image_features.shape)} and "
            f"{tuple(text_features.shape)}"
        )
    num_images, num_texts = image_features.shape[0], text_features.shape[0]
    text_to_image = torch.as_tensor(text_to_image)
    if text_to_image.shape != (num_texts,) or text_to_image.dtype.is_floating_point:
        raise ValueError(f"text_to_image must be an integer tensor of shape ({num_texts},), got {text_to_image.shape}")
    if num_texts == 0 or text_to_image.min() < 0 or text_to_image.max() >= num_images:
        raise ValueError(f"text_to_image must index the {num_images} images")
    captions_per_image = torch.bincount(text_to_image, minlength=num_images)
    if (captions_per_image == 0).any():
        missing = torch.nonzero(captions_per_image == 0).flatten()[:5].tolist()
        raise ValueError(f"every image needs a caption; images {missing} (first 5) have none")
    return text_to_image.long()


def retrieval_ranks(
    image_features: torch.Tensor, text_features: torch.Tensor, text_to_image: torch.Tensor, chunk_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""
    The 1-based rank of the correct answer for every image query and every text query.

    Args:
        image_features (`torch.Tensor` of shape `(I, P)`): L2-normalised image embeddings.
        text_features (`torch.Tensor` of shape `(T, P)`): L2-normalised caption embeddings.
        text_to_image (`torch.LongTensor` of shape `(T,)`): the image of each caption.
        chunk_size (`int`, *optional*, defaults to 1024): query rows scored at once.

    Returns:
        `(image_to_text_ranks (I,), text_to_image_ranks (T,))`, long tensors.
    """
    text_to_image = _check(image_features, text_features, text_to_image).to(image_features.device)
    text_features = text_features.to(image_features)
    image_ranks = []
    for start in range(0, image_features.shape[0], chunk_size):
        scores = image_features[start : start + chunk_size] @ text_features.t()  # (c, T)
        image_ids = torch.arange(start, start + scores.shape[0], device=scores.device)  # (c,)
        positive = text_to_image[None, :] == image_ids[:, None]  # (c, T)
        best_positive = scores.masked_fill(~positive, float("-inf")).amax(dim=1)  # (c,)
        image_ranks.append((scores > best_positive[:, None]).sum(dim=1) + 1)
    text_ranks = []
    for start in range(0, text_features.shape[0], chunk_size):
        scores = text_features[start : start + chunk_size] @ image_features.t()  # (c, I)
        positive = scores.gather(1, text_to_image[start : start + chunk_size, None])  # (c, 1)
        text_ranks.append((scores > positive).sum(dim=1) + 1)
    return torch.cat(image_ranks), torch.cat(text_ranks)


def rank_metrics(ranks: torch.Tensor, prefix: str, recall_at: tuple[int, ...] = RECALL_AT) -> dict:
    """`{prefix}_R@K` (fraction of ranks ≤ K), `{prefix}_mean_rank` and `{prefix}_median_rank` of 1-based ranks."""
    ranks = ranks.double()
    metrics = {f"{prefix}_R@{k}": (ranks <= k).double().mean().item() for k in recall_at}
    metrics[f"{prefix}_mean_rank"] = ranks.mean().item()
    metrics[f"{prefix}_median_rank"] = ranks.quantile(0.5).item()  # the average of the middle two, as numpy
    return metrics


def retrieval_metrics(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_to_image: torch.Tensor,
    recall_at: tuple[int, ...] = RECALL_AT,
    chunk_size: int = 1024,
) -> dict:
    r"""
    Image→text and text→image recall at K, mean and median rank.

    Args:
        image_features (`torch.Tensor` of shape `(I, P)`): L2-normalised image embeddings.
        text_features (`torch.Tensor` of shape `(T, P)`): L2-normalised caption embeddings.
        text_to_image (`torch.LongTensor` of shape `(T,)`): the image of each caption (every image needs
            at least one).
        recall_at (`tuple[int]`, *optional*, defaults to `(1, 5, 10)`)
        chunk_size (`int`, *optional*, defaults to 1024): query rows scored at once.

    Returns:
        `dict` with `image_to_text_R@{k}`, `text_to_image_R@{k}` (fractions), `*_mean_rank`,
        `*_median_rank`, `mean_recall` (the average of all R@K) and `num_images`, `num_texts`.
    """
    image_ranks, text_ranks = retrieval_ranks(image_features, text_features, text_to_image, chunk_size=chunk_size)
    metrics = rank_metrics(image_ranks, "image_to_text", recall_at)
    metrics.update(rank_metrics(text_ranks, "text_to_image", recall_at))
    recalls = [value for key, value in metrics.items() if "_R@" in key]
    metrics["mean_recall"] = sum(recalls) / len(recalls)
    metrics["num_images"], metrics["num_texts"] = image_features.shape[0], text_features.shape[0]
    return metrics


__all__ = ["RECALL_AT", "rank_metrics", "retrieval_chance", "retrieval_metrics", "retrieval_ranks"]
