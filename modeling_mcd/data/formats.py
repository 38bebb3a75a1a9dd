# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""The table formats of `datasets`, on the local disk: `Dataset.save_to_disk` folders and parquet files.

- A folder written by `Dataset.save_to_disk` (`state.json` + `dataset_info.json`) is one table; one written by
  `DatasetDict.save_to_disk` (`dataset_dict.json`) holds a table per split, and `split` picks one.
- Parquet files named as a path, a glob or a brace list are one table. A folder of parquet files laid out as on the
  Hub (`data/train-00000-of-00002.parquet`, `data/test-*.parquet`, `train/*.parquet`, ...) has its splits named by
  its file and folder names, read as `datasets.load_dataset(folder)` reads them; a folder whose names say nothing
  is one table.

`sources.load_image_text_dataset` then keeps the rows of the split (a split column is a column like any other) and
normalises the columns, as for every source.
"""

from __future__ import annotations

import glob
import os
from typing import Any

import datasets
from datasets.data_files import DEFAULT_PATTERNS_ALL, DataFilesDict, get_data_patterns

from .splits import same_split

#: What `Dataset.save_to_disk` and `DatasetDict.save_to_disk` write into their folder.
SAVED_DATASET_FILES = ("state.json", "dataset_info.json")
SAVED_DATASET_DICT_FILE = "dataset_dict.json"
PARQUET = ".parquet"
#: The metadata files of an image folder, which are parquet too but describe images beside them.
_METADATA = "metadata.parquet"


def saved_kind(folder: str) -> str | None:
    """`"dataset"` or `"dataset_dict"` for a folder written by `save_to_disk`, else `None`."""
    if os.path.isfile(os.path.join(folder, SAVED_DATASET_DICT_FILE)):
        return "dataset_dict"
    if all(os.path.isfile(os.path.join(folder, name)) for name in SAVED_DATASET_FILES):
        return "dataset"
    return None


def parquet_files_below(folder: str) -> list[str]:
    """The parquet tables below `folder` (an image folder's `metadata.parquet` left out), sorted."""
    found = glob.glob(os.path.join(glob.escape(folder), "**", f"*{PARQUET}"), recursive=True)
    return sorted(path for path in found if os.path.basename(path) != _METADATA)


def choose_split(available: dict[str, Any], split: str, source: str) -> tuple[str, Any]:
    r"""
    The entry of `available` (split name -> files or table) that is `split`.

    Raises:
        ValueError: `split` is none of the splits (the message lists them).
    """
    wanted = split.split("[")[0]  # "train[:10%]" slices "train"
    for name, value in available.items():
        if same_split(str(name), wanted):
            return str(name), value
    raise ValueError(f"{source} has no split {wanted!r}: its splits are {sorted(map(str, available))}")


def load_saved(
    folder: str, split: str, streaming: bool
) -> tuple[datasets.Dataset | datasets.IterableDataset, str | None]:
    r"""
    Open a `save_to_disk` folder: its table, or its table of `split` for a `DatasetDict`.

    Returns:
        The rows, and the split of the `DatasetDict` they are (`None` for a `Dataset`: one table).
    """
    saved = datasets.load_from_disk(folder)
    name, table = choose_split(dict(saved), split, folder) if isinstance(saved, datasets.DatasetDict) else (None, saved)
    if streaming:
        # One shard per arrow file: the processes of a run share the files out (`streaming.plan_slot`).
        shards = max(1, min(len(table.cache_files), len(table)))
        return table.to_iterable_dataset(num_shards=shards), name
    return table, name


def parquet_splits(folder: str) -> dict[str, list[str]] | None:
    """The parquet files of a folder by split, named by their file and folder names as `datasets` names them;
    `None` when no name says a split (the folder is one table)."""
    patterns = get_data_patterns(folder)
    if patterns == DEFAULT_PATTERNS_ALL:
        return None
    files = DataFilesDict.from_patterns(patterns, base_path=folder)
    splits = {str(name): [path for path in paths if path.endswith(PARQUET)] for name, paths in files.items()}
    return {name: paths for name, paths in splits.items() if paths} or None


def load_parquet(
    files: list[str], split: str, streaming: bool, source: str, **kwargs
) -> tuple[datasets.Dataset | datasets.IterableDataset, str | None]:
    r"""
    Open parquet tables: `files` named by the user, or the files of a folder (`source`), of `split` when their names
    say splits.

    Returns:
        The rows, and the split their file names give (`None` when they name none: the rows are one table).
    """
    name = None
    if os.path.isdir(source) and (splits := parquet_splits(source)) is not None:
        name, files = choose_split(splits, split, source)
    data_files = {"train": files}  # one table, whatever its split: `sources` keeps the rows of the split asked for
    return datasets.load_dataset("parquet", data_files=data_files, split="train", streaming=streaming, **kwargs), name


__all__ = [
    "PARQUET",
    "SAVED_DATASET_DICT_FILE",
    "SAVED_DATASET_FILES",
    "choose_split",
    "load_parquet",
    "load_saved",
    "parquet_files_below",
    "parquet_splits",
    "saved_kind",
]
