# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Evaluation sets bundled with their data, so the training script and the Trainer run them alike.

A task holds its images and texts, and names its dataset and split; `run(model, tokenizer, preprocess)`
encodes them with the features helpers and returns metrics prefixed by the task's name (e.g.
`synthetic_zero_shot_top1`);
`chance_metrics()` gives what a random model scores on the headline metrics. `build_eval_tasks` makes the
tasks a run asks for: the synthetic test split, an image folder for zero-shot, a captions file for retrieval.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase
from transformers.utils import logging

from .datasets import folder_dataset_and_split
from .features import encode_images, encode_texts
from .metrics import classification_chance
from .retrieval import retrieval_chance, retrieval_metrics
from .zero_shot import build_zero_shot_classifier, zero_shot_metrics

Preprocess = Callable[[list], torch.Tensor]
logger = logging.get_logger(__name__)


@dataclass
class ZeroShotTask:
    """Zero-shot classification: images, their labels, class names and prompt templates; `split` names the
    dataset split the images come from (`None`: not known)."""

    name: str
    images: Sequence
    labels: Sequence[int]
    classnames: Sequence[str]
    templates: Sequence[str]
    split: str | None = "test"

    #: The task's part of its metric names: `{name}_{kind}_{metric}`.
    kind: ClassVar[str] = "zero_shot"

    def chance_metrics(self) -> dict[str, float]:
        """What a random guess scores, under the metric names `run` reports."""
        chance = classification_chance(len(self.classnames))
        return {f"{self.name}_{self.kind}_{k}": v for k, v in chance.items()}

    def run(
        self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, preprocess: Preprocess, batch_size: int = 128
    ) -> dict[str, float]:
        classifier = build_zero_shot_classifier(model, tokenizer, self.classnames, self.templates, progress=False)
        features = encode_images(model, self.images, preprocess, batch_size=batch_size, progress=False)
        metrics = zero_shot_metrics(features, classifier, torch.as_tensor(list(self.labels)))
        return {f"{self.name}_{self.kind}_{k}": float(v) for k, v in metrics.items() if k != "num_samples"}


@dataclass
class RetrievalTask:
    """Image-text retrieval (Flickr/COCO protocol): images, captions, and each caption's image index; `split`
    names the dataset split they come from."""

    name: str
    images: Sequence
    texts: Sequence[str]
    text_to_image: Sequence[int]
    split: str | None = "test"

    #: The task's part of its metric names: `{name}_{kind}_{metric}`.
    kind: ClassVar[str] = "retrieval"

    @classmethod
    def from_groups(
        cls, name: str, images: Sequence, captions: Sequence[Sequence[str]], split: str | None = "test"
    ) -> RetrievalTask:
        """Build from one list of captions per image."""
        texts = [caption for group in captions for caption in group]
        return cls(name, images, texts, [i for i, group in enumerate(captions) for _ in group], split)

    def chance_metrics(self) -> dict[str, float]:
        """What a random ranking scores, under the metric names `run` reports."""
        chance = retrieval_chance(len(self.images), len(self.texts))
        return {f"{self.name}_{self.kind}_{k}": v for k, v in chance.items()}

    def run(
        self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, preprocess: Preprocess, batch_size: int = 128
    ) -> dict[str, float]:
        image_features = encode_images(model, self.images, preprocess, batch_size=batch_size, progress=False)
        text_features = encode_texts(model, tokenizer, list(self.texts), progress=False)
        metrics = retrieval_metrics(image_features, text_features, torch.as_tensor(list(self.text_to_image)))
        return {
            f"{self.name}_{self.kind}_{k}": float(v) for k, v in metrics.items() if k not in ("num_images", "num_texts")
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


def chance_levels(tasks: Sequence[ZeroShotTask | RetrievalTask]) -> dict[str, float]:
    """What a random model scores on each task's headline metrics."""
    return {name: value for task in tasks for name, value in task.chance_metrics().items()}


def task_splits(tasks: Sequence[ZeroShotTask | RetrievalTask]) -> dict[str, str | None]:
    """The dataset split of each task, keyed by the `{name}_{kind}` prefix of its metric names."""
    return {f"{task.name}_{task.kind}": task.split for task in tasks}


def build_eval_tasks(
    synthetic_config=None,
    zero_shot_folder: str | None = None,
    zero_shot_templates: str | None = None,
    retrieval_file: str | None = None,
    retrieval_split: str = "test",
    max_samples: int | None = None,
    on_bad_image: str = "skip",
    split_column: str | None = "split",
) -> list[ZeroShotTask | RetrievalTask]:
    r"""
    The evaluation tasks of a run.

    Args:
        synthetic_config (`SyntheticConfig`, *optional*): zero-shot and retrieval on the synthetic test split.
        zero_shot_folder (`str`, *optional*): an image folder `<class>/...` (+ `classnames.json`).
        zero_shot_templates (`str`, *optional*): the prompt set for it (e.g. `cifar10`); default: generic.
        retrieval_file (`str`, *optional*): a `captions.jsonl` (`file_name`, `captions`, `split`).
        retrieval_split (`str`, *optional*, defaults to `"test"`): the split of `retrieval_file` to evaluate on (`val`
            to choose settings, `test` to report).
        max_samples (`int`, *optional*): cap each set: a seeded sample of the images for zero-shot (a folder is
            sorted by class), the first images and their captions for retrieval.
        on_bad_image (`str`, *optional*, defaults to `"skip"`): an unreadable image of the zero-shot folder is left
            out and named in the log (`"skip"`), or stops the run (`"raise"`); see `data.read_class_folder`.
        split_column (`str`, *optional*, defaults to `"split"`): the field of `retrieval_file` naming each line's
            split.
    """
    from ..synthetic import retrieval_dataset, zero_shot_classes, zero_shot_dataset
    from .data import load_captioned_images, load_labelled_images
    from .templates import get_templates

    tasks: list[ZeroShotTask | RetrievalTask] = []
    if synthetic_config is not None:
        head = (lambda d: d.select(range(min(max_samples, len(d))))) if max_samples else (lambda d: d)
        classnames, templates = zero_shot_classes(synthetic_config)
        zero_shot = head(zero_shot_dataset(synthetic_config, split="test"))
        tasks.append(ZeroShotTask("synthetic", zero_shot["image"], zero_shot["label"], classnames, templates))
        retrieval = head(retrieval_dataset(synthetic_config, split="test"))
        tasks.append(RetrievalTask.from_groups("synthetic", retrieval["image"], retrieval["captions"]))
    if zero_shot_folder:
        labelled = load_labelled_images(zero_shot_folder, on_bad_image=on_bad_image)
        log = logger.warning if labelled.skipped else logger.info
        log("--eval_zero_shot_folder: %s", labelled.describe(zero_shot_folder))
        images, labels = labelled.images, labelled.labels.tolist()
        if max_samples and max_samples < len(images):
            keep = sorted(random.Random(0).sample(range(len(images)), max_samples))
            images, labels = images.subset(keep), [labels[i] for i in keep]
        templates = get_templates(zero_shot_templates)
        name, split = folder_dataset_and_split(zero_shot_folder)
        tasks.append(ZeroShotTask(name, images, labels, labelled.classnames, templates, split))
    if retrieval_file:
        captioned = load_captioned_images(retrieval_file, split=retrieval_split, split_column=split_column)
        images, texts, text_to_image = captioned.images, captioned.captions, captioned.text_to_image.tolist()
        if max_samples:
            keep = [i for i, image in enumerate(text_to_image) if image < max_samples]
            images = images[:max_samples]
            texts, text_to_image = [texts[i] for i in keep], [text_to_image[i] for i in keep]
        tasks.append(RetrievalTask(Path(retrieval_file).parent.name, images, texts, text_to_image, retrieval_split))
    return tasks


__all__ = [
    "RetrievalTask",
    "ZeroShotTask",
    "build_eval_tasks",
    "chance_levels",
    "run_tasks",
    "task_splits",
]
