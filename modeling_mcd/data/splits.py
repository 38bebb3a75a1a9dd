# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Rows that name their split: keep those of the split asked for, and say what the other splits held.

Every source goes through `select_split` once its rows are loaded: a caption file's `split` field, an image
folder's metadata column, a Hub, parquet or `save_to_disk` table's column, or that key of a webdataset sample's
`.json` member. A row without a value belongs to the split its source stands for (`unlabelled_split`).
"""

from __future__ import annotations

import json
from collections import Counter
from itertools import islice
from typing import Any

import datasets
from transformers.utils import logging

from .image_folder import _split_of

logger = logging.get_logger(__name__)


def _column_names(dataset: datasets.Dataset | datasets.IterableDataset) -> list[str]:
    if dataset.column_names is not None:
        return list(dataset.column_names)
    # A streaming dataset whose features are not known in advance: look at its first row.
    return list(next(iter(dataset)).keys())


def _split_value(value: Any) -> str | None:
    """A split cell as text: `None` for no value (`None`, `""`); webdataset members arrive as bytes."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace").strip()
    return None if value in (None, "") else str(value)


def _with_split_column(
    dataset: datasets.Dataset | datasets.IterableDataset, split_column: str
) -> tuple[datasets.Dataset | datasets.IterableDataset, str | None]:
    """The dataset and the column holding each row's split, or `None`: `split_column` itself, or that key of a
    webdataset sample's `.json` member."""
    columns = _column_names(dataset)
    if split_column in columns:
        return dataset, split_column
    if "json" in columns:
        # The first sample's: a cut shard's row, first when the first shard is cut early, has no member at all.
        first = next((row["json"] for row in islice(dataset, 1000) if row["json"] is not None), None)
        if isinstance(first, (bytes, str)):
            first = json.loads(first)
        if isinstance(first, dict) and split_column in first:

            def lift(example: dict[str, Any]) -> dict[str, Any]:
                member = example["json"]
                member = json.loads(member) if isinstance(member, (bytes, str)) else member
                return {"_mcd_split": (member or {}).get(split_column)}

            return dataset.map(lift), "_mcd_split"
    return dataset, None


def same_split(name: str, split: str) -> bool:
    """Whether split `name` is `split`: the same name, or two names `datasets` takes for one split (`val`,
    `valid`, `dev` and `validation`; `train` and `training`; `test`, `testing` and `eval`)."""
    return name == split or (_split_of(name) is not None and _split_of(name) == _split_of(split))


def select_split(
    dataset: datasets.Dataset | datasets.IterableDataset,
    split: str,
    split_column: str | None,
    unlabelled_split: str,
    source: str,
) -> datasets.Dataset | datasets.IterableDataset:
    r"""
    Keep the rows of `split` when the rows name their split, and say how many each split kept and dropped.

    A row belongs to the split named in its `split_column` (or, for webdataset shards, that key of its `.json`
    member); a row without a value belongs to `unlabelled_split`. Names `datasets` takes for one split are one split
    (`same_split`: a row saying `validation` is of split `val`). A dataset without the column is returned whole: its
    rows are all of the split it was loaded as.

    Args:
        dataset: the loaded rows.
        split (`str`): the split to keep.
        split_column (`str` or `None`): the column naming each row's split; `None` keeps every row.
        unlabelled_split (`str`): the split of rows with no value in the column (a caption file's training split;
            for a Hub dataset or an image folder, the split it was loaded as).
        source (`str`): the dataset as the user named it, for the messages.

    Returns:
        The rows of `split`. For a map-style dataset, a warning names the count kept and dropped per split; a
        stream is filtered as it is read.

    Raises:
        ValueError: no row belongs to `split` (the message lists the splits that exist, with their counts).
    """
    if split_column is None:
        return dataset
    dataset, column = _with_split_column(dataset, split_column)
    if column is None:
        return dataset

    def keep(value: Any) -> bool:
        return same_split(_split_value(value) or unlabelled_split, split)

    if isinstance(dataset, datasets.IterableDataset):
        logger.warning("%s: keeping the rows whose %r is %r, as the stream is read", source, split_column, split)
        return dataset.filter(keep, input_columns=[column])
    counts = Counter(_split_value(value) or unlabelled_split for value in dataset[column])
    kept = sum(count for name, count in counts.items() if same_split(name, split))
    if kept == 0:
        found = ", ".join(f"{name} {count:,}" for name, count in sorted(counts.items()))
        raise ValueError(
            f"{source} has no row of split {split!r} in its {split_column!r} column (rows without a value count as "
            f"{unlabelled_split!r}); it holds {found}. Choose another split, or --split_column"
        )
    if kept < len(dataset):
        others = ", ".join(f"{name} {count:,}" for name, count in sorted(counts.items()) if not same_split(name, split))
        logger.warning(
            "%s: split %r keeps %s of %s rows; the other splits of its %r column are left out: %s",
            source, split, f"{kept:,}", f"{len(dataset):,}", split_column, others,
        )  # fmt: skip
        dataset = dataset.filter(keep, input_columns=[column])
    return dataset


__all__ = ["same_split", "select_split"]
