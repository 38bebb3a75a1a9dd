# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Opening image-text sources: a Hub dataset, an image folder, caption files (`.jsonl`/`.json`/`.csv`/`.tsv`),
webdataset `.tar` shards (img2dataset's output), parquet files or folders, or a `save_to_disk` folder, each
normalised to the same two columns.

Data flow: `load_image_text_dataset(source)` -> a `datasets.Dataset` (or `IterableDataset` when streaming) with
`image` (kept undecoded: a path or a `{"bytes", "path"}` dict) and `caption` (a string or a list of strings).
Caption files are read row by row by `text_files.read_caption_files`, whose rows also say where they come from
(`file`, `line`), which image they show (`pair_id`) and what is wrong with them (`bad_*`). Webdataset shards are
read by `shards.load_shards`: a shard cut short gives its whole samples and one bad row (`truncated_shard`, with
`file`, `bad_reason`, `bad_column` and `bad_detail` columns like a caption file's rows), and the next shard is read;
a sample without its image or caption member is a bad row (`missing_value`). An image folder is read as exactly its
files (`image_folder.image_folder_files`): `datasets` would take `val`/`train`/`test` in a file name
(`COCO_val2014_000001.jpg`) for a split and leave the file out. Parquet and `save_to_disk` tables are opened by
`formats`. Every source then keeps the rows of its split (`splits.select_split`).
Decoding happens one sample at a time later (`decoding.decode_image`, called by the datasets of `image_text`),
where the bad-sample policy can see what failed.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
from functools import partial
from typing import Any

import datasets
from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder
from transformers.utils import logging

from .formats import PARQUET, load_parquet, load_saved, parquet_files_below, saved_kind
from .image_folder import image_folder_files
from .shards import PROBLEM_COLUMN, load_shards
from .splits import _column_names, select_split
from .text_files import TEXT_FILE_EXTENSIONS, read_caption_files

logger = logging.get_logger(__name__)

IMAGE_EXTENSIONS = frozenset(ImageFolder.EXTENSIONS)

WEBDATASET_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
WEBDATASET_CAPTION_KEYS = ("txt",)
LOCAL_EXTENSIONS = (*TEXT_FILE_EXTENSIONS, ".tar", PARQUET)
#: Sources this package does not read: URLs and webdataset's `pipe:` commands.
REMOTE = re.compile(r"^(pipe:|[A-Za-z][A-Za-z0-9+.-]*://)")
#: The columns of a webdataset row besides `image` and `caption`: a cut shard's row says what is wrong, as the bad
#: rows of a caption file do; they are `None` on every sample.
SHARD_ROW_COLUMNS = ("file", "bad_reason", "bad_column", "bad_detail")


def expand_braces(pattern: str) -> list[str]:
    """Expand webdataset-style brace lists: `"shard-{000..002}.tar"` and `"{a,b}.tar"` (nested allowed).

    Args:
        pattern: a path with zero or more `{lo..hi}` numeric ranges (zero padding kept) or `{x,y}` lists.

    Returns:
        The expanded paths, in order.
    """
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    head, body, tail = pattern[: match.start()], match.group(1), pattern[match.end() :]
    numeric = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if numeric:
        lo, hi = numeric.groups()
        width = len(lo) if lo.startswith("0") else 0
        options = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    else:
        options = body.split(",")
    return [path for option in options for path in expand_braces(head + option + tail)]


def _local_files(source: str) -> list[str]:
    """The local files named by `source` (a path, a glob or a brace list); empty when none exist.

    Raises:
        ValueError: some of the names (or globs) of a brace list find no file while others do: the list names the
            data, and training on part of it without a word would lose the rest.
    """
    files: list[str] = []
    missing: list[str] = []
    patterns = expand_braces(source)
    for pattern in patterns:
        found = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern] * os.path.isfile(pattern)
        files.extend(found)
        if not found:
            missing.append(pattern)
    if files and missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise ValueError(f"{len(missing)} of the {len(patterns)} files named by {source!r} do not exist: {shown}")
    return files


def _require_column(columns: Sequence[str], name: str, argument: str, source: str) -> None:
    if name not in columns:
        raise ValueError(f"{argument}={name!r} is not a column of {source!r}; its columns are {sorted(columns)}")


def lazy_images(
    dataset: datasets.Dataset | datasets.IterableDataset, column: str = "image"
) -> datasets.Dataset | datasets.IterableDataset:
    """Cast an `Image` column to `decode=False` so rows hold raw bytes/paths for `decode_image`."""
    features = dataset.features
    if features is not None and isinstance(features.get(column), datasets.Image) and features[column].decode:
        return dataset.cast_column(column, datasets.Image(decode=False))
    return dataset


def _normalise_columns(
    dataset: datasets.Dataset | datasets.IterableDataset,
    image_column: str,
    caption_column: str,
    source: str,
    extra: Sequence[str] = (),
) -> datasets.Dataset | datasets.IterableDataset:
    """Keep `image_column` and `caption_column`, renamed to `image` and `caption`, and the `extra` columns."""
    columns = _column_names(dataset)
    _require_column(columns, image_column, "image_column", source)
    _require_column(columns, caption_column, "caption_column", source)
    dataset = dataset.select_columns([image_column, caption_column, *extra])
    for old, new in ((image_column, "image"), (caption_column, "caption")):
        if old != new:
            dataset = dataset.rename_column(old, new)
    return lazy_images(dataset)


def _shard_row(example: dict[str, Any], image_keys: Sequence[str], caption_key: str) -> dict[str, Any]:
    """`image` (a `{"bytes", "path"}` dict naming the shard) and `SHARD_ROW_COLUMNS` of one webdataset row."""
    problem = example.get(PROBLEM_COLUMN)
    row = {"image": None, "file": None, "bad_reason": None, "bad_column": None, "bad_detail": None}
    if problem is not None:  # the row of a shard cut short (`shards`)
        return {**row, "file": example["__url__"], "bad_reason": "truncated_shard", "bad_detail": problem}
    # A shard may mix extensions: each sample holds one image key, the others are None.
    for key in image_keys:
        value = example[key]
        if isinstance(value, dict):
            # Name the shard in the path so that bad-sample messages point at the right tar file.
            row["image"] = {"bytes": value["bytes"], "path": f"{example['__url__']}/{value['path']}"}
            break
        if value is not None:
            row["image"] = value
            break
    caption = example.get(caption_key)
    where = row["image"].get("path") if isinstance(row["image"], dict) else example["__url__"]
    if isinstance(caption, str) and "\ufffd" in caption:  # bytes `shards` could not decode
        detail = f"the caption member holds bytes that are not UTF-8 (shown as U+FFFD): {caption!r:.80}"
        row.update(file=where, bad_reason="bad_encoding", bad_column="caption", bad_detail=detail)
    elif row["image"] is None or caption is None:  # a sample without one of its members (img2dataset's failures)
        column, member = ("image", "/".join(image_keys)) if row["image"] is None else ("caption", caption_key)
        detail = f"sample {example.get('__key__')!r} has no .{member} member"
        row.update(file=where, bad_reason="missing_value", bad_column=column, bad_detail=detail)
    return row


def _load_webdataset(
    files: list[str],
    split: str,
    image_column: str,
    caption_column: str,
    streaming: bool,
    source: str,
    pick: dict[str, Any],
    **kwargs,
) -> datasets.Dataset | datasets.IterableDataset:
    dataset = load_shards(files, split, streaming, **kwargs)
    columns = _column_names(dataset)
    if image_column == "image" and "image" not in columns:
        image_keys = [key for key in WEBDATASET_IMAGE_KEYS if key in columns]
        if not image_keys:
            raise ValueError(
                f"no image in the webdataset shards {source!r}: expected one of {WEBDATASET_IMAGE_KEYS} "
                f"(or pass image_column); the shards hold {sorted(columns)}"
            )
    else:
        _require_column(columns, image_column, "image_column", source)
        image_keys = [image_column]
    for key in image_keys:
        if isinstance(dataset.features[key], datasets.Image):
            dataset = dataset.cast_column(key, datasets.Image(decode=False))
    if caption_column == "caption" and "caption" not in columns:
        caption_column = next((key for key in WEBDATASET_CAPTION_KEYS if key in columns), caption_column)
    dataset = dataset.map(_shard_row, fn_kwargs={"image_keys": image_keys, "caption_key": caption_column})
    # After the image casts: a filtered stream no longer knows its features.
    dataset = select_split(dataset, unlabelled_split=split, **pick)
    return _normalise_columns(dataset, "image", caption_column, source, extra=SHARD_ROW_COLUMNS)


def load_image_text_dataset(
    source: str,
    split: str = "train",
    image_column: str = "image",
    caption_column: str = "caption",
    streaming: bool = False,
    allow_paths_outside_data: bool = False,
    split_column: str | None = "split",
    train_split: str = "train",
    csv_separator: str | None = None,
    paths_relative_to: str = "file",
    **kwargs,
) -> datasets.Dataset | datasets.IterableDataset:
    r"""
    Open an image-text dataset and normalise it to two columns, `image` and `caption`.

    Images stay undecoded (paths or `{"bytes", "path"}` dicts): `decode_image` decodes them one at a
    time inside `ImageTextDataset`, where the bad-sample policy can see what failed.

    Args:
        source (`str`):
            One of
            - a local `imagefolder` directory with a `metadata.jsonl`/`metadata.csv` (`file_name` +
              caption columns): every image below it, whatever its name, or below the folder of `split` when its
              first-level folders name splits (`train/`, `validation/`/`val/`, `test/`);
            - a folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk` (`split` picks the table);
            - a folder of parquet files laid out as on the Hub (`data/train-*.parquet`, `data/test-*.parquet`:
              the split from the names, as `datasets.load_dataset(folder)` reads it), or `.parquet` files;
            - `.jsonl`/`.json`/`.csv`/`.tsv` files (a path, a glob or a brace list) whose `image_column` holds
              image paths, relative to the directory of the file that names them (or to the working directory,
              `paths_relative_to="cwd"`), or absolute. They are read row by row (`text_files.read_caption_files`):
              a bad row is a row to skip, not a dead file, and the dataset has the columns `pair_id`, `file`, `line`
              and `bad_reason`/`bad_column`/`bad_detail` too;
            - webdataset `.tar` shards (a path, a glob or a brace list such as `"data/{00000..00099}.tar"`, every
              named shard must exist) with `jpg`/`jpeg`/`png`/`webp` + `txt` members per sample (used when
              `image_column` / `caption_column` are left at their defaults). A shard cut short gives the samples
              before the cut and one bad row (`truncated_shard`, naming the shard), and the next shard is read; a
              sample without one of the members is a bad row; the dataset also has the columns `file` and
              `bad_reason`/`bad_column`/`bad_detail`;
            - otherwise, a dataset on the Hub, opened with `datasets.load_dataset(source, split=...)`.
            URLs and `pipe:` commands are refused: copy or mount the files.
        split (`str`, *optional*, defaults to `"train"`): the split to load. Where the rows name their split in
            `split_column` (a caption file's `split` field, an image folder's metadata, a Hub dataset's column, a
            webdataset sample's `.json` member), only that split's rows are kept (`select_split`).
        image_column (`str`, *optional*, defaults to `"image"`): the column holding the image.
        caption_column (`str`, *optional*, defaults to `"caption"`): the column holding one caption (a
            string) or several (a list of strings, one of which is drawn per step).
        streaming (`bool`, *optional*, defaults to `False`): return a `datasets.IterableDataset`.
        allow_paths_outside_data (`bool`, *optional*, defaults to `False`): let relative image paths of a caption
            file leave its folder (`../x.jpg`); by default such a row is bad (`path_outside_data`).
        split_column (`str`, *optional*, defaults to `"split"`): the column naming each row's split; `None` keeps
            every row whatever it says.
        train_split (`str`, *optional*, defaults to `"train"`): the split of a caption file's rows that name none
            (a file without a split column is all training rows).
        csv_separator (`str`, *optional*): the field separator of `.csv`/`.tsv` files; default `,` for `.csv` and
            a tab for `.tsv` (`"\\t"` and `"tab"` name a tab).
        paths_relative_to (`str`, *optional*, defaults to `"file"`): what relative image paths of a caption file
            are relative to: `"file"` (its folder) or `"cwd"` (the working directory, as open_clip reads them).
        kwargs: passed on to `datasets.load_dataset` (e.g. `cache_dir`); caption files are read without it.

    Returns:
        `datasets.Dataset` or `datasets.IterableDataset` with columns `image` and `caption`.

    Raises:
        ValueError: `image_column` or `caption_column` is missing (the message lists the columns that
            exist), a caption file cannot be read, a named shard is missing, a split is not there (the message
            lists those that are), a URL or `pipe:` source, or local files of an unsupported kind.
    """
    pick = {"split": split, "split_column": split_column, "source": source}
    if REMOTE.match(source):
        raise ValueError(
            f"{source!r}: remote files and shards (URLs, pipe: commands) are not read; copy or mount them and name "
            "the local files, or name a Hub dataset (org/name)"
        )
    table = partial(_table, image_column=image_column, caption_column=caption_column, pick=pick)
    if os.path.isdir(source):
        if saved_kind(source) is not None:  # Dataset.save_to_disk / DatasetDict.save_to_disk
            dataset, name = load_saved(source, split, streaming)
            return table(dataset, split if name is not None else train_split)
        if (parquet := parquet_files_below(source)) and not _holds_images(source):  # a Hub-layout parquet folder
            dataset, name = load_parquet(parquet, split, streaming, source, **kwargs)
            return table(dataset, split if name is not None else train_split)
        data_files = {split.split("[")[0]: image_folder_files(source, split)}  # "train[:10%]" slices "train"
        dataset = datasets.load_dataset(
            "imagefolder", data_files=data_files, split=split, streaming=streaming, **kwargs
        )
        return table(dataset, split)
    files = _local_files(source)
    if not files:
        if glob.has_magic(source) or "{" in source or source.lower().endswith(LOCAL_EXTENSIONS):
            raise ValueError(f"no file matches {source!r}")
        return table(datasets.load_dataset(source, split=split, streaming=streaming, **kwargs), split)
    extensions = {os.path.splitext(path)[1].lower() for path in files}
    if extensions <= {".jsonl", ".json"} or extensions <= {".csv", ".tsv"}:
        dataset = read_caption_files(
            files, image_column, caption_column, allow_paths_outside_data, split_column,
            separator=csv_separator, paths_relative_to=paths_relative_to,
        )  # fmt: skip
        dataset = select_split(dataset, unlabelled_split=train_split, **{**pick, "split_column": "split"})
        return dataset.to_iterable_dataset() if streaming else dataset
    if extensions == {".tar"}:
        return _load_webdataset(files, split, image_column, caption_column, streaming, source, pick, **kwargs)
    if extensions == {PARQUET}:
        return table(load_parquet(files, split, streaming, source, **kwargs)[0], train_split)
    raise ValueError(
        f"cannot tell how to read {source!r}: its files end with {sorted(extensions)}; expected one kind of "
        ".jsonl/.json, .csv/.tsv, .parquet or .tar files, an image folder, a parquet folder or a save_to_disk folder"
    )


def _table(dataset, unlabelled: str, image_column: str, caption_column: str, pick: dict[str, Any]):
    """The rows of a table-like source (a Hub dataset, an image folder, parquet, save_to_disk) of the split asked
    for, its rows without a split value counting as `unlabelled`, with the two columns."""
    dataset = select_split(dataset, unlabelled_split=unlabelled, **pick)
    return _normalise_columns(dataset, image_column, caption_column, pick["source"])


def _holds_images(folder: str) -> bool:
    """Whether an image file lies below `folder` (an image folder, not a parquet one); stops at the first."""
    for _, _, names in os.walk(folder):
        if any(os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS for name in names):
            return True
    return False
