# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Evaluation data from disk: labelled images, captioned images, SugarCrepe pairs.

Images stay on disk until the encoder asks for them ([`LazyImages`]); labelled image folders are read
with `datasets`' `imagefolder` builder, so a folder and a saved `datasets` dataset give the same thing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image


class LazyImages(Sequence):
    """A sequence of image files, each opened as an RGB PIL image only when indexed."""

    def __init__(self, paths: Sequence[str | Path]):
        self.paths = [Path(path) for path in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return LazyImages(self.paths[index])
        try:
            with Image.open(self.paths[index]) as image:
                return image.convert("RGB")
        except OSError as error:
            raise ValueError(f"cannot read image {self.paths[index]}: {error}") from error


# ------------------------------------------------------------------------------------ classification
@dataclass
class LabelledImages:
    """Images with integer labels and the display name of each class (index = label)."""

    images: Sequence  # PIL images, a `datasets` image column or a `LazyImages`
    labels: torch.Tensor  # (N,) long
    classnames: list[str] | None


def _read_json_list(path: Path) -> list[str]:
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ValueError(f"{path} must hold a JSON list of strings")
    return names


def read_classnames(root: Path, folder_names: list[str]) -> list[str] | None:
    """Display names for the class folders from a `classnames.json` in `root` or its parent.

    `classnames.json` lists display names in class order; an optional `folders.json` beside it gives
    the folder of each class in that same order (the layout of `shared/data/cifar10`). Without
    `folders.json` the order is the sorted folder names, which is also `imagefolder`'s label order.

    Returns:
        The display name of each entry of `folder_names`, or `None` when there is no `classnames.json`.
    """
    for directory in (root, root.parent):
        classnames_file = directory / "classnames.json"
        if not classnames_file.is_file():
            continue
        names = _read_json_list(classnames_file)
        folders_file = directory / "folders.json"
        folders = _read_json_list(folders_file) if folders_file.is_file() else sorted(folder_names)
        if len(folders) != len(names):
            raise ValueError(f"{classnames_file} has {len(names)} names but there are {len(folders)} class folders")
        by_folder = dict(zip(folders, names))
        missing = [folder for folder in folder_names if folder not in by_folder]
        if missing:
            raise ValueError(f"{classnames_file} (with {folders_file.name}) names no class for folders {missing}")
        return [by_folder[folder] for folder in folder_names]
    return None


def load_labelled_images(
    data, split: str | None = None, image_column: str = "image", label_column: str = "label"
) -> LabelledImages:
    r"""
    Labelled images from an image folder (`<class>/<image>`), a folder saved by `save_to_disk`, or a
    `datasets.Dataset` / `DatasetDict` with an image column and a label column.

    Args:
        data (`str`, `Path`, `datasets.Dataset` or `datasets.DatasetDict`): where the images are.
        split (`str`, *optional*): which split of a `DatasetDict`; may be left out when there is one.
        image_column (`str`, *optional*, defaults to `"image"`)
        label_column (`str`, *optional*, defaults to `"label"`)

    Returns:
        [`LabelledImages`]; `classnames` come from `classnames.json` (see [`read_classnames`]), else from
        the label column's `ClassLabel` names, else `None`.
    """
    import datasets

    root = None
    if isinstance(data, (str, Path)):
        root = Path(data)
        if not root.is_dir():
            raise ValueError(f"image data {root} is not a folder")
        if (root / "dataset_info.json").is_file() or (root / "dataset_dict.json").is_file():
            data = datasets.load_from_disk(str(root))
        else:
            data = datasets.load_dataset("imagefolder", data_dir=str(root))
    if isinstance(data, datasets.DatasetDict):
        if (split is None and len(data) != 1) or (split is not None and split not in data):
            raise ValueError(f"the data has splits {list(data)}; choose one with split= (got {split!r})")
        data = data[split] if split is not None else next(iter(data.values()))
    for column in (image_column, label_column):
        if column not in data.column_names:
            raise ValueError(f"the data has no column {column!r}; its columns are {data.column_names}")
    feature = data.features[label_column]
    folder_names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    classnames = folder_names
    if root is not None and folder_names is not None:
        classnames = read_classnames(root, folder_names) or folder_names
    labels = torch.as_tensor(list(data[label_column]), dtype=torch.long)  # (N,)
    return LabelledImages(images=data[image_column], labels=labels, classnames=classnames)


# ------------------------------------------------------------------------------------------ retrieval
@dataclass
class CaptionedImages:
    """Images and their captions; each caption belongs to exactly one image."""

    images: LazyImages
    captions: list[str]
    text_to_image: torch.Tensor  # (T,) long: the image index of each caption


def load_captioned_images(path: str | Path, split: str | None = "test") -> CaptionedImages:
    r"""
    Read image–caption data from a JSON-lines file, or a folder holding `captions.jsonl`.

    Each line has `file_name` (relative to the file's folder) and either `captions` (a list) or `text` /
    `caption` (one string; lines repeating a `file_name` add captions to it). With `split`, only lines
    whose `split` field equals it are kept (lines without the field are kept). This reads the
    `shared/data/flickr8k` layout and the `imagefolder` `metadata.jsonl` form.

    Args:
        path (`str` or `Path`): the `.jsonl` file or its folder.
        split (`str`, *optional*, defaults to `"test"`): `None` keeps every line.

    Returns:
        [`CaptionedImages`]
    """
    path = Path(path)
    if path.is_dir():
        path = path / "captions.jsonl"
    if not path.is_file():
        raise ValueError(f"caption file {path} does not exist")
    captions_by_file: dict[str, list[str]] = {}
    with path.open(encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_number} is not valid JSON: {error}") from error
            if split is not None and row.get("split", split) != split:
                continue
            if "file_name" not in row:
                raise ValueError(f"{path}:{line_number} has no 'file_name'")
            captions = row.get("captions", row.get("text", row.get("caption")))
            captions = [captions] if isinstance(captions, str) else captions
            if not captions or not all(isinstance(caption, str) for caption in captions):
                raise ValueError(f"{path}:{line_number} needs 'captions' (list of str) or 'text' (str)")
            captions_by_file.setdefault(row["file_name"], []).extend(captions)
    if not captions_by_file:
        raise ValueError(f"{path} has no rows" + (f" with split {split!r}" if split is not None else ""))
    file_names = list(captions_by_file)
    captions = [caption for name in file_names for caption in captions_by_file[name]]
    text_to_image = torch.repeat_interleave(
        torch.arange(len(file_names)), torch.tensor([len(captions_by_file[name]) for name in file_names])
    )
    return CaptionedImages(LazyImages([path.parent / name for name in file_names]), captions, text_to_image)


# -------------------------------------------------------------------------------------- SugarCrepe
@dataclass
class CompositionalityPairs:
    """SugarCrepe samples: an image, its true caption and a hard negative caption, with a category."""

    images: LazyImages  # the distinct images
    image_index: torch.Tensor  # (N,) long: the image of each sample
    captions: list[str]
    negative_captions: list[str]
    categories: list[str]


def load_sugarcrepe(annotations: str | Path, image_dir: str | Path) -> CompositionalityPairs:
    r"""
    Read SugarCrepe: one JSON file per category (`replace_obj.json`, `swap_att.json`, ...), each mapping
    a sample id to `{"filename", "caption", "negative_caption"}`; `filename` is relative to `image_dir`.

    Args:
        annotations (`str` or `Path`): a folder of category files, or one category file.
        image_dir (`str` or `Path`): the folder of the images (COCO val2017 for SugarCrepe).

    Returns:
        [`CompositionalityPairs`]; the category is the file's stem.
    """
    annotations, image_dir = Path(annotations), Path(image_dir)
    files = sorted(annotations.glob("*.json")) if annotations.is_dir() else [annotations]
    if not files or not all(file.is_file() for file in files):
        raise ValueError(f"no SugarCrepe JSON files at {annotations}")
    image_ids: dict[str, int] = {}
    image_index, captions, negatives, categories = [], [], [], []
    for file in files:
        try:
            samples = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{file} is not valid JSON: {error}") from error
        if not isinstance(samples, dict):
            raise ValueError(f"{file} must map sample ids to samples")
        for sample_id, sample in samples.items():
            missing = [key for key in ("filename", "caption", "negative_caption") if key not in sample]
            if missing:
                raise ValueError(f"{file}, sample {sample_id!r}: missing {missing}")
            image_path = image_dir / sample["filename"]
            if not image_path.is_file():
                raise ValueError(f"{file}, sample {sample_id!r}: image {image_path} does not exist")
            image_index.append(image_ids.setdefault(sample["filename"], len(image_ids)))
            captions.append(sample["caption"])
            negatives.append(sample["negative_caption"])
            categories.append(file.stem)
    return CompositionalityPairs(
        images=LazyImages([image_dir / name for name in image_ids]),
        image_index=torch.tensor(image_index, dtype=torch.long),
        captions=captions,
        negative_captions=negatives,
        categories=categories,
    )


__all__ = [
    "CaptionedImages",
    "CompositionalityPairs",
    "LabelledImages",
    "LazyImages",
    "load_captioned_images",
    "load_labelled_images",
    "load_sugarcrepe",
    "read_classnames",
]
