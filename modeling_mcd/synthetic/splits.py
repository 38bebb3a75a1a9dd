# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Building the `datasets` splits of the synthetic data from rendered scenes.

Data flow: `scenes.render_sample` for every index of a split -> images stored as PNG bytes (`datasets.Image`)
-> a `datasets.Dataset` with the columns a use needs: `load_synthetic_dataset` (train/validation/test, every
column), `zero_shot_dataset` (single-object images + class label), `retrieval_dataset` (images + several
captions, like COCO). `synthetic_pairs` turns a split into the `image`/`caption` pairs that
`modeling_mcd.data.ImageTextDataset` trains on.
"""

from __future__ import annotations

import io
from typing import Any

from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, List, Value
from PIL import Image as PILImage

from .config import SPLITS, SyntheticConfig
from .scenes import render_sample, zero_shot_classes


def _features(config: SyntheticConfig, columns: tuple[str, ...]) -> Features:
    obj = {
        "shape": Value("string"),
        "colour": Value("string"),
        "size": Value("string"),
        "bbox": List(Value("int32"), length=4),
    }
    every = {
        "image": Image(),
        "caption": Value("string"),
        "captions": List(Value("string")),
        "objects": List(obj),
        "label": ClassLabel(names=zero_shot_classes(config)[0]),
    }
    return Features({column: every[column] for column in columns})


def _png(image: PILImage.Image) -> dict[str, Any]:
    """The `datasets.Image` storage of an image: PNG at zlib level 1, ~4x faster to write than
    the default level and as small on these flat scenes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return {"bytes": buffer.getvalue(), "path": None}


def _build(config: SyntheticConfig, split: str, columns: tuple[str, ...], single_object: bool = False) -> Dataset:
    samples = [render_sample(config, split, i, single_object) for i in range(config.num_examples(split))]
    for sample in samples:
        sample["image"] = _png(sample["image"])
    return Dataset.from_dict(
        {column: [sample[column] for sample in samples] for column in columns},
        features=_features(config, columns),
        split=split,
    )


def load_synthetic_dataset(config: SyntheticConfig | None = None) -> DatasetDict:
    """Generate the train/validation/test splits in memory (a few seconds at the defaults).

    Args:
        config (`SyntheticConfig`, *optional*): dataset configuration (defaults if `None`).

    Returns:
        `datasets.DatasetDict`: splits `train`, `validation`, `test`, each with columns `image`
        (`datasets.Image`), `caption`, `captions`, `objects` and `label` (`ClassLabel`).
    """
    config = config or SyntheticConfig()
    columns = ("image", "caption", "captions", "objects", "label")
    return DatasetDict({split: _build(config, split, columns) for split in SPLITS})


def zero_shot_dataset(config: SyntheticConfig | None = None, split: str = "test") -> Dataset:
    """Single-object images whose class ("<colour> <shape>") is well defined.

    Args:
        config (`SyntheticConfig`, *optional*): dataset configuration (defaults if `None`).
        split (`str`, *optional*, defaults to "test"): which split's size and seed stream to use.

    Returns:
        `datasets.Dataset`: columns `image` and `label` (`ClassLabel` over `zero_shot_classes`).
    """
    return _build(config or SyntheticConfig(), split, ("image", "label"), single_object=True)


def retrieval_dataset(config: SyntheticConfig | None = None, split: str = "test") -> Dataset:
    """Image-text retrieval set: the split's scenes, each with several captions (as in COCO).

    Args:
        config (`SyntheticConfig`, *optional*): dataset configuration (defaults if `None`).
        split (`str`, *optional*, defaults to "test"): which split to use.

    Returns:
        `datasets.Dataset`: columns `image` and `captions` (`captions_per_image` per image).
    """
    return _build(config or SyntheticConfig(), split, ("image", "captions"))


def synthetic_pairs(split: Dataset) -> Dataset:
    """A synthetic split as image/caption pairs; `caption` holds all 5 captions (one is drawn per step)."""
    return split.select_columns(["image", "captions"]).rename_column("captions", "caption")
