# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Caption files read row by row: `.jsonl`, `.json`, `.csv` and `.tsv` files whose rows name an image file and its
caption(s).

Data flow: `read_caption_files(files, image_column, caption_column)` -> a `datasets.Dataset` with one row per line
(or record) of the files, in file order: `image` (the path resolved against the file's folder), `caption` (a list
of cleaned captions), `pair_id` (the first row that names the same image file), `file` and `line` (the 1-based line
a user can open), `split` (the row's split column, when it has one), and, for a row that cannot be used,
`bad_reason`, `bad_column` and `bad_detail`.

A problem of one row never stops the reading: bytes that are not UTF-8 or NUL characters, a line that is not a JSON
object or gives a used key twice, a CSV record with the wrong number of fields, a quote that would swallow the rows
after it (`csv_records`), an empty line, a missing or non-text value, a caption with no visible character, a
relative path that leaves the file's folder (unless `allow_paths_outside_data`), a missing or zero-byte image file.
Each makes its row a bad row, which `image_text.ImageTextDataset` leaves out of the epoch before training (and
names, counts and saves) or stops at (`on_bad_sample="raise"`). Only what makes a whole file unreadable raises
`ValueError` here: a file that cannot be opened or decoded, a CSV header without the columns or naming one twice,
columns found in no row. A file without a row is named in a warning. UTF-16 and UTF-32 files, a byte order mark on
every line and old Mac line ends (`\r`) are read as their text (`text_lines`).

Everything is read into memory (about the size of the text itself); webdataset shards are the form for data too
large for that.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from typing import Any

import datasets
from transformers.utils import logging

from ..objective.pairs import PADDING_PAIR_ID
from .csv_records import Record, csv_records
from .decoding import BadSampleError, valid_captions, validate_caption
from .text_lines import physical_lines, read_text, strip_line_end, text_problem, undecodable_bytes

logger = logging.get_logger(__name__)

TEXT_FILE_EXTENSIONS = (".jsonl", ".json", ".csv", ".tsv")
#: What relative image paths of a caption file are relative to: its folder, or the working directory (open_clip).
PATHS_RELATIVE_TO = ("file", "cwd")
#: The columns of the dataset `read_caption_files` returns.
FEATURES = datasets.Features(
    {
        "image": datasets.Value("string"),
        "caption": datasets.List(datasets.Value("string")),
        "pair_id": datasets.Value("int64"),
        "file": datasets.Value("string"),
        "line": datasets.Value("int64"),
        "bad_reason": datasets.Value("string"),
        "bad_column": datasets.Value("string"),
        "bad_detail": datasets.Value("string"),
        "split": datasets.Value("string"),
    }
)


class _Object(dict):
    """A JSON object, and the keys it gives more than once (`json` keeps the last value silently)."""

    repeated: tuple[str, ...] = ()


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    record = _Object(pairs)
    if len(record) < len(pairs):
        keys = [key for key, _ in pairs]
        record.repeated = tuple(sorted({key for key in keys if keys.count(key) > 1}))
    return record


def _json_record(value: Any, columns: tuple[str, ...]) -> dict | BadSampleError:
    if not isinstance(value, dict):
        return BadSampleError("malformed_json", f"a JSON {type(value).__name__}, not an object: {value!r:.80}")
    repeated = [key for key in getattr(value, "repeated", ()) if key in columns]
    if repeated:
        return BadSampleError("malformed_json", f"the object gives the key {repeated[0]!r} twice: which value holds?")
    return value


def _json_records(text: str, path: str, columns: tuple[str, ...]) -> Iterator[Record]:
    """JSON Lines: one object a line. A `.json` file holding one JSON array gives its elements, without a line
    (they are named by their row)."""
    if path.lower().endswith(".json") and text.lstrip().startswith("["):
        try:
            records = json.loads(text, object_pairs_hook=_object)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is neither JSON Lines nor a valid JSON array: {error}") from error
        for record in records:
            yield None, _json_record(record, columns)
        return
    for number, line in enumerate(physical_lines(text), start=1):
        line = strip_line_end(line)
        if not line.strip():
            yield number, BadSampleError("empty_line", "an empty line")
            continue
        try:
            record = json.loads(line, object_pairs_hook=_object)
        except json.JSONDecodeError as error:
            problem = text_problem(line)  # bad bytes or NULs make a line unparseable: name the cause
            if problem:
                yield number, BadSampleError("bad_encoding", f"the line: {problem}")
            else:
                yield number, BadSampleError("malformed_json", f"not JSON: {error}")
            continue
        yield number, _json_record(record, columns)


def read_json_lines(path: str) -> list[tuple[int, dict]]:
    r"""
    The JSON objects of a JSON Lines file with their 1-based lines, blank lines left out, for readers that stop at
    the first bad line (an evaluation set) rather than skip it. Decoded as `read_caption_files` decodes.

    Raises:
        ValueError: naming the file and line: bytes that are not text, a line that is not JSON or not an object.
    """
    rows = []
    for number, line in enumerate(physical_lines(read_text(path)), start=1):
        line = strip_line_end(line)
        if not line.strip():
            continue
        if problem := text_problem(line):
            raise ValueError(f"{path}:{number}: {problem}")
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number} is not valid JSON: {error}") from error
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number} is not a JSON object: {row!r:.80}")
        rows.append((number, row))
    return rows


def _caption(value: Any) -> str:
    if isinstance(value, str) and (problem := undecodable_bytes(value)):
        raise BadSampleError("bad_encoding", f"caption {value!r:.80}: {problem}")
    caption = validate_caption(value)  # a caption of NULs and zero-width characters only is empty
    if problem := text_problem(caption):
        raise BadSampleError("bad_encoding", f"caption {value!r:.80}: {problem}")
    return caption


def leaves_folder(base_dir: str, value: str) -> bool:
    """Whether the relative path `value` leads out of `base_dir` (checked on the path's text, not the disk); an
    absolute path never does: it is the file's explicit choice."""
    base_dir = os.path.normpath(os.path.abspath(base_dir))  # "run/../data" must compare as "data"
    full = os.path.normpath(os.path.join(base_dir, value))
    return not os.path.isabs(value) and os.path.commonpath([base_dir, full]) != base_dir


class ImagePaths:
    r"""
    Resolves the image paths of one caption file and checks that each names a non-empty file (once a path).

    Args:
        base_dir (`str`): the caption file's folder (absolute); relative paths are resolved against it.
        allow_outside (`bool`): accept relative paths that leave `base_dir` (`../x.jpg`).
        hint (`str`, *optional*): added to the message of a path leaving the folder: how to allow it.
        base_name (`str`, *optional*): what `base_dir` is, for that message.
    """

    def __init__(
        self,
        base_dir: str,
        allow_outside: bool,
        hint: str = " (--allow_paths_outside_data)",
        base_name: str = "the folder of the caption file",
    ):
        self.base_dir = base_dir
        self.allow_outside, self.hint, self.base_name = allow_outside, hint, base_name
        self.checked: dict[str, BadSampleError | None] = {}

    def resolve(self, value: Any) -> str:
        """The absolute, normalised path of the image path `value`.

        Raises:
            BadSampleError: `missing_value`, `non_text_path`, `bad_encoding`, `path_outside_data`, `missing_file`
                or `empty_file`.
        """
        if value is None or value == "":
            raise BadSampleError("missing_value", "no image path")
        if not isinstance(value, str):
            raise BadSampleError("non_text_path", f"the image path is a {type(value).__name__}: {value!r:.80}")
        if problem := text_problem(value):  # os.stat refuses a NUL: a whole-run error if not caught here
            raise BadSampleError("bad_encoding", f"image path {value!r:.80}: {problem}")
        if not self.allow_outside and leaves_folder(self.base_dir, value):
            raise BadSampleError("path_outside_data", f"{value!r} leaves {self.base_name}, {self.base_dir}{self.hint}")
        full = os.path.normpath(os.path.join(self.base_dir, value))
        if full not in self.checked:
            self.checked[full] = _file_problem(full)
        if self.checked[full] is not None:
            raise self.checked[full]
        return full

    def is_file(self, value: str) -> bool:
        """Whether `value`, resolved like an image path, names an existing file."""
        return os.path.isfile(os.path.join(self.base_dir, value))


def _file_problem(path: str) -> BadSampleError | None:
    try:
        status = os.stat(path)
    except OSError as error:
        return BadSampleError("missing_file", f"no such file: {path} ({error.strerror})")
    if not stat.S_ISREG(status.st_mode):
        return BadSampleError("missing_file", f"not a file: {path}")
    if status.st_size == 0:
        return BadSampleError("empty_file", f"zero-byte file: {path}")
    return None


def csv_separator(path: str, separator: str | None = None) -> str:
    """The field separator of the CSV/TSV file `path`: `separator` (`"\\t"` and `"tab"` name a tab, as open_clip's
    `--csv-separator "\\t"` reaches it from a shell), else a tab for `.tsv` and `,` for `.csv`.

    Raises:
        ValueError: `separator` is not one character.
    """
    if separator is None:
        return "\t" if path.lower().endswith(".tsv") else ","
    separator = "\t" if separator in ("\\t", "tab") else separator
    if len(separator) != 1:
        raise ValueError(f"--csv_separator must be one character (or '\\t' / 'tab' for a tab), got {separator!r}")
    return separator


def read_caption_files(
    files: list[str],
    image_column: str,
    caption_column: str,
    allow_paths_outside_data: bool = False,
    split_column: str | None = "split",
    separator: str | None = None,
    paths_relative_to: str = "file",
) -> datasets.Dataset:
    r"""
    Read caption files row by row into one dataset, each row's problems recorded with it (see the module docstring).

    Args:
        files (`list[str]`): `.jsonl`/`.json`/`.csv`/`.tsv` files, read in this order.
        image_column (`str`): the column holding the image path (relative to the file's folder, or absolute).
        caption_column (`str`): the column holding one caption or a list of captions.
        allow_paths_outside_data (`bool`, *optional*, defaults to `False`): accept relative paths such as
            `../other/x.jpg` that leave the folder of the caption file.
        split_column (`str`, *optional*, defaults to `"split"`): the column naming each row's split, copied to
            the `split` column (`None` where a row has no value, or a line cannot be read). `None`: no such column.
        separator (`str`, *optional*): the field separator of CSV/TSV files (`csv_separator`).
        paths_relative_to (`str`, *optional*, defaults to `"file"`): relative image paths are relative to the
            caption file's folder (`"file"`) or to the working directory (`"cwd"`, as open_clip reads them); a path
            leaving that folder is a bad row unless `allow_paths_outside_data`.

    Returns:
        `datasets.Dataset` with the columns of `FEATURES`; `bad_reason` is `None` on the rows that can be used.

    Raises:
        ValueError: a file cannot be read or decoded, a CSV header lacks a column or names one twice, or a column is
            found in no JSON row.
    """
    columns = {name: [] for name in FEATURES}
    first_row_of: dict[str, int] = {}
    used = tuple(name for name in (image_column, caption_column, split_column) if name is not None)
    if paths_relative_to not in PATHS_RELATIVE_TO:
        raise ValueError(f"paths_relative_to must be one of {PATHS_RELATIVE_TO}, got {paths_relative_to!r}")
    for path in files:
        text = read_text(path)
        if paths_relative_to == "cwd":
            images = ImagePaths(os.getcwd(), allow_paths_outside_data, base_name="the working directory")
        else:
            images = ImagePaths(os.path.dirname(os.path.abspath(path)), allow_paths_outside_data)
        if path.lower().endswith((".csv", ".tsv")):
            delimiter = csv_separator(path, separator)
            records = csv_records(physical_lines(text), path, used, is_file=images.is_file, delimiter=delimiter)
        else:
            records = _json_records(text, path, used)
        seen_keys: set[str] = set()  # the columns of a JSON file's objects
        rows_before = len(columns["file"])
        dropped: list[tuple[int | None, int]] = []  # (line, count) of the list entries left out of usable rows
        for line, record in records:
            image = caption = bad = row_split = None
            column = None
            if isinstance(record, BadSampleError):
                bad = record
            else:
                seen_keys.update(record)
                if split_column is not None and record.get(split_column) not in (None, ""):
                    row_split = str(record[split_column])
                try:
                    column = caption_column
                    if record.get(caption_column) is None:
                        raise BadSampleError("missing_value", "no caption")
                    value = record[caption_column]
                    caption = valid_captions(value, validate=_caption)
                    column = image_column
                    image = images.resolve(record.get(image_column))
                    if isinstance(value, (list, tuple)) and len(caption) < len(value):
                        dropped.append((line, len(value) - len(caption)))
                except BadSampleError as error:
                    bad, image, caption = error, None, None
            pair_id = PADDING_PAIR_ID if bad else first_row_of.setdefault(image, len(columns["file"]))
            for name, value in (
                ("image", image),
                ("caption", caption),
                ("pair_id", pair_id),
                ("file", path),
                ("line", line),
                ("bad_reason", bad and bad.reason),
                ("bad_column", column if bad else None),
                ("bad_detail", bad and bad.detail),
                ("split", row_split),
            ):
                columns[name].append(value)
        if len(columns["file"]) == rows_before:
            logger.warning("%s holds no row: nothing of it is used", path)
        if dropped:
            first = f"line {dropped[0][0]}" if dropped[0][0] is not None else "an element of its array"
            logger.warning(
                "%s: %d captions in lists of captions cannot be used (empty, not text or not UTF-8) and are left out, "
                "their rows kept (first on %s)", path, sum(count for _, count in dropped), first,
            )  # fmt: skip
        if seen_keys:
            for name, argument in ((image_column, "image_column"), (caption_column, "caption_column")):
                if name not in seen_keys:
                    raise ValueError(
                        f"{argument}={name!r} is not a column of {path}; its columns are {sorted(seen_keys)}"
                    )
    return datasets.Dataset.from_dict(columns, features=FEATURES)


__all__ = [
    "FEATURES",
    "PATHS_RELATIVE_TO",
    "TEXT_FILE_EXTENSIONS",
    "ImagePaths",
    "csv_separator",
    "leaves_folder",
    "read_caption_files",
    "read_json_lines",
]
