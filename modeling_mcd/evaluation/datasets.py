# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""What an evaluation task runs on, whichever reader built it: labelled images (classification), captioned images
(retrieval), SugarCrepe pairs (compositionality); and the rules every reader shares (what makes a task, what names a
split folder).

Readers: `data` (folders and caption files), `wds` (CLIP_benchmark's webdataset folders), `modeling_mcd.synthetic`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.lazy_images import LazyImages

#: Folder names that name a split, not a dataset or a class (`cifar10/test`).
SPLIT_FOLDER_NAMES = ("test", "val", "validation", "train")
#: What `--on-bad-image` accepts: skip (and name) an unreadable image, or stop at it.
ON_BAD_IMAGE_CHOICES = ("skip", "raise")


def require_a_task(source, classes: int, images: int, skipped: int = 0) -> None:
    """Refuse data that makes no task: fewer than 2 classes or fewer than 2 images."""
    if classes < 2:
        raise ValueError(f"{source} holds {classes} class(es): a task needs at least 2 classes (else no chance level)")
    if images < 2:
        left_out = f" ({skipped} unreadable left out)" if skipped else ""
        raise ValueError(f"{source}: only {images} image(s) can be used{left_out}: a task needs at least 2 images")


def folder_dataset_and_split(folder: str | Path) -> tuple[str, str | None]:
    """`.../cifar10/test` -> `("cifar10", "test")`, `.../toy` -> `("toy", None)`: a split folder is named after
    its split, and its parent after the dataset."""
    folder = Path(folder)
    if folder.name in SPLIT_FOLDER_NAMES:
        return folder.parent.name, folder.name
    return folder.name, None


@dataclass
class LabelledImages:
    """Images with integer labels and the display name of each class (index = label); from a folder, also the
    number of class folders and the images that could not be read (skipped). `class_keys` name the classes in label
    order as the data does (the folder names of an image folder), `key_order` says what that order is, and
    `templates` are the prompts the data ships (a CLIP_benchmark webdataset folder), if any."""

    images: Sequence  # PIL images, a `datasets` image column, a `LazyImages` or a `TarImages`
    labels: torch.Tensor  # (N,) long
    classnames: list[str] | None
    num_classes: int | None = None
    skipped: list[str] = field(default_factory=list)  # "path: why", one per image left out
    class_keys: list[str] | None = None
    key_order: str = "label id order"
    templates: list[str] | None = None

    def describe(self, source) -> str:
        """One line for the user: how many images of how many classes are used, and what was skipped."""
        classes = f" in {self.num_classes} classes" if self.num_classes is not None else ""
        text = f"{len(self.labels)} images{classes} from {source}"
        if self.skipped:
            text += f"; {len(self.skipped)} unreadable skipped: " + "; ".join(self.skipped[:5])
            text += " ..." if len(self.skipped) > 5 else ""
        return text


@dataclass
class CaptionedImages:
    """Images and their captions; each caption belongs to exactly one image."""

    images: Sequence  # a `LazyImages`, or a `TarImages` of a webdataset folder
    captions: list[str]
    text_to_image: torch.Tensor  # (T,) long: the image index of each caption


@dataclass
class CompositionalityPairs:
    """SugarCrepe samples: an image, its true caption and a hard negative caption, with a category."""

    images: LazyImages  # the distinct images
    image_index: torch.Tensor  # (N,) long: the image of each sample
    captions: list[str]
    negative_captions: list[str]
    categories: list[str]


__all__ = [
    "ON_BAD_IMAGE_CHOICES",
    "SPLIT_FOLDER_NAMES",
    "CaptionedImages",
    "CompositionalityPairs",
    "LabelledImages",
    "folder_dataset_and_split",
    "require_a_task",
]
