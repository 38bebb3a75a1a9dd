# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Zero-shot image classification (CLIP, Radford et al. 2021, §3.1.4): prompt-ensembled class embeddings
are the weights of a linear classifier on normalised image embeddings."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from .features import encode_texts
from .metrics import classification_metrics
from .templates import check_templates, fill_template


def build_zero_shot_classifier(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    classnames: Sequence[str],
    templates: Sequence[str],
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> torch.Tensor:
    r"""
    Embed every (template, class) prompt, average the normalised embeddings of each class over the
    templates and renormalise, as CLIP does.

    Args:
        model (`nn.Module`): a dual encoder with `get_text_features`.
        tokenizer (`PreTrainedTokenizerBase`): its tokenizer.
        classnames (`Sequence[str]`): one display name per class, in label order.
        templates (`Sequence[str]`): prompts with one `{}` (or CLIP_benchmark's `{c}`) for the class name, e.g.
            `"a photo of a {}."`.
        batch_size, device, progress: as in [`encode_texts`].

    Returns:
        `torch.FloatTensor` of shape `(projection_dim, num_classes)`: unit-norm columns, on CPU.
    """
    if len(classnames) == 0:
        raise ValueError("build_zero_shot_classifier needs at least one class name")
    check_templates(list(templates))
    prompts = [fill_template(template, name) for name in classnames for template in templates]  # class-major
    embeddings = encode_texts(model, tokenizer, prompts, batch_size=batch_size, device=device, progress=progress)
    embeddings = embeddings.view(len(classnames), len(templates), -1).mean(dim=1)  # (C, P)
    return nn.functional.normalize(embeddings, dim=-1).t().contiguous()  # (P, C)


def zero_shot_metrics(
    image_features: torch.Tensor,
    classifier: torch.Tensor,
    labels: torch.Tensor,
    logit_scale: float = 100.0,
    topk: tuple[int, ...] = (1, 5),
) -> dict:
    r"""
    Classify normalised image embeddings with a zero-shot classifier and score the result.

    Args:
        image_features (`torch.Tensor` of shape `(N, P)`): L2-normalised image embeddings.
        classifier (`torch.Tensor` of shape `(P, C)`): from [`build_zero_shot_classifier`].
        labels (`torch.LongTensor` of shape `(N,)`): true classes.
        logit_scale (`float`, *optional*, defaults to 100): CLIP's temperature; it does not change the
            ranking, only the logits' scale.
        topk (`tuple[int]`, *optional*, defaults to `(1, 5)`): k is capped at C.

    Returns:
        `dict` with `top1`, `top5`, `mean_per_class_accuracy` (fractions) and `num_samples`.
    """
    if image_features.dim() != 2 or classifier.dim() != 2 or image_features.shape[1] != classifier.shape[0]:
        raise ValueError(
            f"image_features (N, P) and classifier (P, C) do not fit: {tuple(image_features.shape)} and "
            f"{tuple(classifier.shape)}"
        )
    logits = logit_scale * image_features @ classifier.to(image_features)  # (N, C)
    return classification_metrics(logits, labels, topk=topk)


__all__ = ["build_zero_shot_classifier", "zero_shot_metrics"]
