# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Evaluation data from disk: labelled images, captioned images, SugarCrepe pairs.

Images stay on disk until the encoder asks for them ([`LazyImages`]), decoded as training decodes them
(`modeling_mcd.data.decode_image`, its pixel limit included) and centre-cropped to at most 4:1 before an image
processor resizes their shortest edge (a 1,000,000 x 1 strip would become 224,000,000 x 224). A labelled image folder
is read as exactly its files ([`read_class_folder`]): class = first-level subfolder, every image below it, no split
inference (`datasets`' `imagefolder` kept 134 of 1,000 ImageNet validation images named `ILSVRC2012_val_*.JPEG`,
taking "val" for a split); each image is decoded once up front, so a corrupt one or a decompression bomb is skipped
and named (or raises) before any encoding. A caption file follows training's rules (`data.text_files`: encodings,
relative paths inside its folder, visible captions), each bad line a `ValueError` naming it. A task needs 2 classes
and 2 images: with one, every prediction is right and there is no chance level. CLIP_benchmark's webdataset folders
are read by `wds`.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image

from ..data.lazy_images import AspectCropped, LazyImages
from ..data.splits import same_split
from .datasets import (
    ON_BAD_IMAGE_CHOICES,
    SPLIT_FOLDER_NAMES,
    CaptionedImages,
    CompositionalityPairs,
    LabelledImages,
    require_a_task,
)
from .wds import find_webdataset, load_webdataset_captioned, load_webdataset_labelled


# ------------------------------------------------------------------------------------ classification
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
    `folders.json` the order is the sorted folder names, which is also [`read_class_folder`]'s label order.

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


def _image_extensions() -> frozenset[str]:
    """Every file extension of a format PIL can open, lower case."""
    return frozenset(ext.lower() for ext, kind in Image.registered_extensions().items() if kind in Image.OPEN)


def read_class_folder(folder: str | Path, on_bad_image: str = "skip") -> LabelledImages:
    r"""
    Read an image folder `<class>/<image>` as exactly its files: class = first-level subfolder (labels in sorted
    folder order), every file below it with an image extension (any case, e.g. `.JPEG`), in sorted order. Every
    image is decoded once here, in threads.

    Args:
        folder (`str` or `Path`): the folder of class folders.
        on_bad_image (`str`, *optional*, defaults to `"skip"`): an image that cannot be decoded is left out and
            named in `skipped` (`"skip"`), or raises `ValueError` naming it (`"raise"`).

    Returns:
        [`LabelledImages`] with `LazyImages`, the folder names as `classnames` and `num_classes`.

    Raises:
        ValueError: no class folder, images outside the class folders, no image at all, a folder of split
            folders (`train/`, `test/`, ...), fewer than 2 classes or 2 usable images, or (with `"raise"`) an
            unreadable image.
    """
    if on_bad_image not in ON_BAD_IMAGE_CHOICES:
        raise ValueError(f"on_bad_image must be one of {ON_BAD_IMAGE_CHOICES}, got {on_bad_image!r}")
    folder = Path(folder)
    extensions = _image_extensions()
    entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    classes = [entry.name for entry in entries if entry.is_dir() and not entry.name.startswith(".")]
    loose = [entry.name for entry in entries if entry.is_file() and Path(entry.name).suffix.lower() in extensions]
    if loose:
        raise ValueError(
            f"{folder} holds {len(loose)} images outside class folders (e.g. {loose[0]}); "
            "images go in <class>/ subfolders"
        )
    if classes and set(classes) <= set(SPLIT_FOLDER_NAMES):
        raise ValueError(f"{folder} holds split folders {classes}, not class folders: choose one with --split")
    paths, labels = [], []
    for label, name in enumerate(classes):
        for directory, subfolders, files in os.walk(folder / name):
            subfolders.sort()
            for file in sorted(files):
                if Path(file).suffix.lower() in extensions:
                    paths.append(Path(directory) / file)
                    labels.append(label)
    if not paths:
        raise ValueError(f"no images in {folder}: expected <class>/<image> files ({len(classes)} class folders)")
    require_a_task(folder, len(classes), len(paths))  # before decoding them all
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        errors = list(pool.map(_image_problem, paths))
    bad = [f"{path}: {error}" for path, error in zip(paths, errors) if error is not None]
    if bad and on_bad_image == "raise":
        raise ValueError(f"cannot read image {bad[0]} (--on-bad-image skip leaves unreadable images out)")
    keep = [i for i, error in enumerate(errors) if error is None]
    require_a_task(folder, len(classes), len(keep), skipped=len(bad))
    images = LazyImages([paths[i] for i in keep])
    labels = torch.tensor([labels[i] for i in keep], dtype=torch.long)
    return LabelledImages(images, labels, classes, len(classes), bad, list(classes), "sorted order of the folder names")


def _image_problem(path: Path) -> str | None:
    """Why the image at `path` cannot be decoded (`"reason (detail)"`), or `None`."""
    from ..data.decoding import DEFAULT_MAX_PIXELS, BadSampleError, decode_image

    try:
        decode_image(path, max_pixels=DEFAULT_MAX_PIXELS, draft_size=32)
    except BadSampleError as error:
        return f"{error.reason} ({error.detail.removeprefix(f'{path}: ')})"
    return None


def load_labelled_images(
    data,
    split: str | None = None,
    image_column: str = "image",
    label_column: str = "label",
    on_bad_image: str = "skip",
) -> LabelledImages:
    r"""
    Labelled images from an image folder (`<class>/<image>`), a CLIP_benchmark webdataset folder (`wds.py`), a
    folder saved by `save_to_disk`, or a `datasets.Dataset` / `DatasetDict` with an image column and a label column.

    Args:
        data (`str`, `Path`, `datasets.Dataset` or `datasets.DatasetDict`): where the images are: an image folder
            (read by [`read_class_folder`]; with `split`, its subfolder of that name), or a saved dataset.
        split (`str`, *optional*): which split of a `DatasetDict`, or which split folder of an image folder; may
            be left out when there is one.
        image_column (`str`, *optional*, defaults to `"image"`)
        label_column (`str`, *optional*, defaults to `"label"`)
        on_bad_image (`str`, *optional*, defaults to `"skip"`): see [`read_class_folder`].

    Returns:
        [`LabelledImages`]; `classnames` come from `classnames.json` (see [`read_classnames`]), else from
        the class folders or the label column's `ClassLabel` names, else `None`.

    Raises:
        ValueError: see [`read_class_folder`]; fewer than 2 classes (the `ClassLabel` names, else the distinct
            labels) or 2 images.
    """
    import datasets

    if isinstance(data, (str, Path)):
        root = Path(data)
        if not root.is_dir():
            raise ValueError(f"image data {root} is not a folder")

        if find_webdataset(root, split) is not None:
            return load_webdataset_labelled(root, split, on_bad_image)
        if not ((root / "dataset_info.json").is_file() or (root / "dataset_dict.json").is_file()):
            folder = root / split if split is not None else root
            if not folder.is_dir():
                subfolders = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
                raise ValueError(f"{root} has no split folder {split!r}; its folders are {subfolders}")
            labelled = read_class_folder(folder, on_bad_image)
            labelled.classnames = read_classnames(folder, labelled.classnames) or labelled.classnames
            return labelled
        data = datasets.load_from_disk(str(root))
    if isinstance(data, datasets.DatasetDict):
        if (split is None and len(data) != 1) or (split is not None and split not in data):
            raise ValueError(f"the data has splits {list(data)}; choose one with split= (got {split!r})")
        data = data[split] if split is not None else next(iter(data.values()))
    for column in (image_column, label_column):
        if column not in data.column_names:
            raise ValueError(f"the data has no column {column!r}; its columns are {data.column_names}")
    feature = data.features[label_column]
    classnames = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    labels = torch.as_tensor(list(data[label_column]), dtype=torch.long)  # (N,)
    num_classes = len(classnames) if classnames is not None else None
    require_a_task("the data", num_classes if num_classes is not None else len(labels.unique()), len(labels))
    images = AspectCropped(data[image_column])
    order = f"order of the {label_column!r} column's ClassLabel names" if classnames is not None else "label id order"
    return LabelledImages(images, labels, classnames, num_classes, class_keys=classnames, key_order=order)


# ------------------------------------------------------------------------------------------ retrieval
def load_captioned_images(
    path: str | Path, split: str | None = "test", split_column: str | None = "split"
) -> CaptionedImages:
    r"""
    Read image–caption data from a JSON-lines file, a folder holding `captions.jsonl`, or a CLIP_benchmark
    webdataset retrieval folder (its `split` folder's shards, `.txt` captions: `wds.load_webdataset_captioned`).

    Each line has `file_name` (relative to the file's folder, which it may not leave, or absolute) and either
    `captions` (a list) or `text` / `caption` (one string; lines naming the same image file, however the path is
    spelled, add captions to it). With `split`, only lines whose `split_column` field equals it are kept; in a file
    where some lines name a split, a line naming none is a training line (the training loader's rule), and a file
    where no line names one is evaluated whole. This reads the `shared/data/flickr8k` layout and the `imagefolder`
    `metadata.jsonl` form. The file is decoded as training decodes caption files (UTF-8, UTF-16, BOMs).

    Args:
        path (`str` or `Path`): the `.jsonl` file or its folder.
        split (`str`, *optional*, defaults to `"test"`): `None` keeps every line.
        split_column (`str`, *optional*, defaults to `"split"`): the field naming a line's split.

    Returns:
        [`CaptionedImages`], its images as absolute paths.

    Raises:
        ValueError: naming the file and line: bytes that are not text, a line that is not a JSON object, no
            `file_name` or captions, a caption with no visible character, a path leaving the folder, a missing or
            empty image file; or fewer than 2 images.
    """
    from ..data.decoding import BadSampleError, validate_caption
    from ..data.text_files import ImagePaths, read_json_lines

    path = Path(path)
    if path.is_dir() and not (path / "captions.jsonl").is_file() and find_webdataset(path, split) is not None:
        return load_webdataset_captioned(path, split)
    if path.is_dir():
        path = path / "captions.jsonl"
    if not path.is_file():
        raise ValueError(f"caption file {path} does not exist")
    rows = read_json_lines(str(path))
    if split is not None and split_column is not None:
        if any(row.get(split_column) not in (None, "") for _, row in rows):
            rows = [(number, row) for number, row in rows if same_split(row.get(split_column) or "train", split)]
    # Normalised (`os.path.abspath`): `../data/captions.jsonl` must not make every relative path "leave" its folder.
    image_paths = ImagePaths(
        os.path.abspath(path.parent), allow_outside=False, hint="; give an absolute path to use it"
    )
    captions_by_file: dict[str, list[str]] = {}
    for line_number, row in rows:
        if "file_name" not in row:
            raise ValueError(f"{path}:{line_number} has no 'file_name'")
        captions = row.get("captions", row.get("text", row.get("caption")))
        captions = [captions] if isinstance(captions, str) else captions
        if not captions or not all(isinstance(caption, str) for caption in captions):
            raise ValueError(f"{path}:{line_number} needs 'captions' (list of str) or 'text' (str)")
        try:
            captions = [validate_caption(caption) for caption in captions]
            image = image_paths.resolve(row["file_name"])
        except BadSampleError as error:
            raise ValueError(f"{path}:{line_number}: {error}") from error
        captions_by_file.setdefault(image, []).extend(captions)
    if not captions_by_file:
        raise ValueError(f"{path} has no rows" + (f" with split {split!r}" if split is not None else ""))
    if len(captions_by_file) < 2:
        count = sum(map(len, captions_by_file.values()))
        raise ValueError(
            f"{path} holds 1 image (with {count} caption{'' if count == 1 else 's'}): retrieval needs at least 2 "
            "images (with 1, every caption finds it and there is no chance level)"
        )
    file_names = list(captions_by_file)
    captions = [caption for name in file_names for caption in captions_by_file[name]]
    text_to_image = torch.repeat_interleave(
        torch.arange(len(file_names)), torch.tensor([len(captions_by_file[name]) for name in file_names])
    )
    return CaptionedImages(LazyImages(file_names), captions, text_to_image)


# -------------------------------------------------------------------------------------- SugarCrepe
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
    from ..data.text_files import leaves_folder

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
            if leaves_folder(str(image_dir.absolute()), str(sample["filename"])):
                raise ValueError(
                    f"{file}, sample {sample_id!r}: {sample['filename']!r} leaves the image folder {image_dir}; "
                    "give an absolute path to use it"
                )
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
    "load_captioned_images",
    "load_labelled_images",
    "load_sugarcrepe",
    "read_class_folder",
    "read_classnames",
]
