# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""The files of a training image folder, listed so that a file name never decides a split.

`datasets`' `imagefolder` infers splits from file names as well as folder names: `COCO_val2014_000001.jpg` is a
validation file, `train_x.jpg` a training one, and loading one split silently drops the others' files (and their
captions from the metadata). `sources` hands `imagefolder` the list made here instead (`data_files`), so that every
image of the folder trains; only first-level folders named after a split (`train/`, `val/`, `test/`, ...) choose
one, as `datasets` reads them. The evaluation side reads its class folders itself for the same reason
(`evaluation.data.read_class_folder`).
"""

from __future__ import annotations

import os

# Folder names of each split, as `datasets` reads them (`datasets.data_files`).
_SPLIT_FOLDERS = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test", "testing", "eval", "evaluation"),
}
_METADATA_FILES = ("metadata.jsonl", "metadata.csv", "metadata.parquet")


def _hidden(name: str) -> bool:
    return name.startswith((".", "__"))  # what datasets leaves out of a folder too


def _files_below(folder: str) -> list[str]:
    files = []
    for directory, subfolders, names in os.walk(folder):
        subfolders[:] = sorted(name for name in subfolders if not _hidden(name))
        files.extend(os.path.join(directory, name) for name in sorted(names) if not _hidden(name))
    return files


def _split_of(name: str) -> str | None:
    """The split a folder name stands for (`val` -> `validation`), or `None`."""
    return next((split for split, names in _SPLIT_FOLDERS.items() if name.lower() in names), None)


def image_folder_files(folder: str, split: str) -> list[str]:
    r"""
    The files of an image folder that make `split`: every file below it; or, when its first-level folders name
    splits, every file below the folder(s) of `split` and the metadata files beside them. File names play no part.

    Args:
        folder (`str`): the image folder (images and `metadata.jsonl`/`.csv`/`.parquet` files).
        split (`str`): the split to load, possibly sliced (`"train[:10%]"`).

    Returns:
        `list[str]`: the paths, in sorted order (hidden files and folders left out).

    Raises:
        ValueError: split folders, none of them `split`'s (the message lists them); or no file at all.
    """
    subfolders = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not _hidden(entry.name))
    split_folders = [name for name in subfolders if _split_of(name) is not None]
    if not split_folders:
        files = _files_below(folder)
    else:
        wanted = split.split("[")[0]
        chosen = [name for name in split_folders if name == wanted or _split_of(name) == _split_of(wanted)]
        if not chosen:
            raise ValueError(f"{folder} has no folder of split {split!r}; its split folders are {split_folders}")
        files = [os.path.join(folder, name) for name in _METADATA_FILES if os.path.isfile(os.path.join(folder, name))]
        for name in chosen:
            files.extend(_files_below(os.path.join(folder, name)))
    if not files:
        raise ValueError(f"no file in the image folder {folder}")
    return files


__all__ = ["image_folder_files"]
