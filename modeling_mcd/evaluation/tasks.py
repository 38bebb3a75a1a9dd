# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Evaluation sets bundled with their data, so the training script and the Trainer run them alike.

A task holds its images and texts; `run(model, tokenizer, preprocess)` encodes them with the features
helpers and returns metrics prefixed by the task's name (e.g. `synthetic_zero_shot_top1`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from .features import encode_images, encode_texts
from .retrieval import retrieval_metrics
from .zero_shot import build_zero_shot_classifier, zero_shot_metrics

Preprocess = Callable[[list], torch.Tensor]


@dataclass
class ZeroShotTask:
    """Zero-shot classification: images, their labels, class names and prompt templates."""

    name: str
    images: Sequence
    labels: Sequence[int]
    classnames: Sequence[str]
    templates: Sequence[str]

    @property
    def chance(self) -> float:
        return 1.0 / len(self.classnames)

    def run(
        self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, preprocess: Preprocess, batch_size: int = 128
    ) -> dict[str, float]:
        classifier = build_zero_shot_classifier(model, tokenizer, self.classnames, self.templates, progress=False)
        features = encode_images(model, self.images, preprocess, batch_size=batch_size, progress=False)
        metrics = zero_shot_metrics(features, classifier, torch.as_tensor(list(self.labels)))
        return {f"{self.name}_zero_shot_{k}": float(v) for k, v in metrics.items() if k != "num_samples"}


@dataclass
class RetrievalTask:
    """Image-text retrieval (Flickr/COCO protocol): images, captions, and each caption's image index."""

    name: str
    images: Sequence
    texts: Sequence[str]
    text_to_image: Sequence[int]

    @classmethod
    def from_groups(cls, name: str, images: Sequence, captions: Sequence[Sequence[str]]) -> "RetrievalTask":
        """Build from one list of captions per image."""
        texts = [caption for group in captions for caption in group]
        return cls(name, images, texts, [i for i, group in enumerate(captions) for _ in group])

    @property
    def chance(self) -> float:
        """R@1 of a random ranking, both directions: 1 / number of images."""
        return 1.0 / len(self.images)

    def run(
        self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, preprocess: Preprocess, batch_size: int = 128
    ) -> dict[str, float]:
        image_features = encode_images(model, self.images, preprocess, batch_size=batch_size, progress=False)
        text_features = encode_texts(model, tokenizer, list(self.texts), progress=False)
        metrics = retrieval_metrics(image_features, text_features, torch.as_tensor(list(self.text_to_image)))
        return {
            f"{self.name}_retrieval_{k}": float(v) for k, v in metrics.items() if k not in ("num_images", "num_texts")
        }


def run_tasks(
    tasks: Sequence[ZeroShotTask | RetrievalTask],
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    preprocess: Preprocess,
    batch_size: int = 128,
) -> dict[str, float]:
    """Run every task and merge their metrics."""
    metrics: dict[str, float] = {}
    for task in tasks:
        metrics.update(task.run(model, tokenizer, preprocess, batch_size=batch_size))
    return metrics


__all__ = ["RetrievalTask", "ZeroShotTask", "run_tasks"]
