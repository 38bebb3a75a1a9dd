# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""CSV records read so that a stray quote costs its own row, not the rows after it.

Python's `csv` reader joins lines for as long as a quoted field is open. One quote left open makes the next rows
part of a caption (when a later quote closes it), or makes them vanish (when none does: the reader fails at the end
of the file, having taken every line). So each record here is read by a fresh reader from its first line, and a
record that takes in more than one line is checked. It is an `unbalanced_quote` when

- its quote is never closed, or the reader fails on a later line of it; or
- a line it took in reads as a row of its own: the header's number of fields, and a value in the image column
  that looks like an image path (an image extension, one the file's rows use, or an existing file).

Then its first line is the bad row (naming the lines it would have taken), the line holding the closing quote is
one too, and every line between is read again as a record of its own: good rows survive. A caption that really
spans lines ("a cat\\non a mat") has no such line and stays one record.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from typing import Any

from PIL import Image

from .decoding import BadSampleError

Record = tuple[int | None, Any]  # (the line where the record starts, its fields as a dict or its BadSampleError)


class _Lines:
    """`lines[start:]` handed to a csv reader one at a time; `end` is the index of the next line not handed out."""

    def __init__(self, lines: Sequence[str], start: int):
        self.lines, self.end = lines, start

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if self.end >= len(self.lines):
            raise StopIteration
        self.end += 1
        return self.lines[self.end - 1]


class _Records:
    """Reads the record that starts on any line: one csv reader while records follow each other (the fast path), a
    fresh one after an error or a jump (a reader that failed is left mid-record)."""

    def __init__(self, lines: Sequence[str], delimiter: str = ","):
        self.lines, self.delimiter = lines, delimiter
        self.source: _Lines | None = None
        self.reader = None

    def read(self, start: int) -> tuple[list[str] | csv.Error, int]:
        """The record whose first line is `lines[start]`: its fields or the reader's error, and the index of the
        line after the last one it took."""
        if self.reader is None or self.source.end != start:
            self.source = _Lines(self.lines, start)
            # strict: a stray quote is an error, not a field
            self.reader = csv.reader(self.source, delimiter=self.delimiter, strict=True)
        try:
            return next(self.reader), self.source.end
        except csv.Error as error:
            self.reader = None
            return error, self.source.end


@lru_cache(maxsize=1)
def _image_extensions() -> frozenset[str]:
    return frozenset(ext.lower() for ext, kind in Image.registered_extensions().items() if kind in Image.OPEN)


def _span(first: int, last: int) -> str:
    """`lines 3-7` for 1-based line numbers, `line 3` for one line."""
    return f"line {first}" if first == last else f"lines {first}-{last}"


class _RowShape:
    """What a line that is a whole row looks like: the header's number of fields, and an image path in the image
    column."""

    # The good records whose image extension is learned: a corpus uses few, and the check costs on every row.
    LEARNED_ROWS = 100

    def __init__(self, width: int, image_index: int, is_file: Callable[[str], bool], delimiter: str = ","):
        self.width, self.image_index, self.is_file, self.delimiter = width, image_index, is_file, delimiter
        self.extensions = set(_image_extensions())
        self.learned = 0

    def learn(self, fields: list[str]) -> None:
        """Remember the extension of a good record's image path (a corpus may use one PIL does not know)."""
        if self.learned < self.LEARNED_ROWS:
            self.learned += 1
            extension = os.path.splitext(fields[self.image_index].strip())[1].lower()
            if extension:
                self.extensions.add(extension)

    def matches(self, line: str) -> bool:
        try:
            fields = next(csv.reader([line], delimiter=self.delimiter, strict=True))
        except (csv.Error, StopIteration):
            return False
        if len(fields) != self.width:
            return False
        value = fields[self.image_index].strip()
        return bool(value) and (os.path.splitext(value)[1].lower() in self.extensions or self.is_file(value))


def _header(lines: Sequence[str], path: str, columns: Sequence[str], delimiter: str) -> tuple[list[str], int]:
    if not lines:
        raise ValueError(f"{path} has no readable CSV header: the file is empty")
    header, end = _Records(lines, delimiter).read(0)
    if end > 1:
        runs = "is never closed" if isinstance(header, csv.Error) else f"closes on line {end}"
        raise ValueError(f"{path}: the CSV header opens a quote on line 1 that {runs}; a header is one line")
    if isinstance(header, csv.Error):
        raise ValueError(f"{path} has no readable CSV header: {header}")
    for column, argument in zip(columns, ("image_column", "caption_column")):
        if column not in header:
            hint = f" (fields separated by {delimiter!r}: --csv_separator?)" if len(header) == 1 else ""
            raise ValueError(f"{argument}={column!r} is not a column of {path}; its columns are {sorted(header)}{hint}")
    for column in columns:
        if header.count(column) > 1:
            raise ValueError(f"{path} names the column {column!r} twice in its header: which one holds the data?")
    return header, end


def csv_records(
    lines: Sequence[str],
    path: str,
    columns: Sequence[str],
    is_file: Callable[[str], bool] = lambda value: False,
    delimiter: str = ",",
) -> Iterator[Record]:
    r"""
    The records of a CSV file with a header, each with the 1-based line it starts on.

    Args:
        lines (`Sequence[str]`): the file's physical lines, each with its line end (`text_lines.physical_lines`).
        path (`str`): the file, for the messages.
        columns (`Sequence[str]`): the image column, the caption column, then any other column read (the split
            column); the first two must be in the header, and none may be named twice.
        is_file (`Callable[[str], bool]`, *optional*): whether an image column value names an existing file; used
            to recognise rows whose image paths have no known extension.
        delimiter (`str`, *optional*, defaults to `","`): the field separator (a tab for TSV).

    Yields:
        `(line, {column: value})` for a record, `(line, BadSampleError)` for a line that is not one: `empty_line`,
        `wrong_field_count`, `malformed_csv` (a stray quote within a line, a field past csv's size limit, a copy of
        the header), `unbalanced_quote` (see the module docstring).

    Raises:
        ValueError: no header, a header missing the image or caption column, naming a column twice, or spanning
            lines.
    """
    header, position = _header(lines, path, columns, delimiter)
    shape = _RowShape(len(header), header.index(columns[0]), is_file, delimiter)
    closing: dict[int, int] = {}  # a line holding the quote that closes one opened on an unbalanced line -> that line
    records = _Records(lines, delimiter)
    while position < len(lines):
        start = position
        if start in closing:
            opened = closing.pop(start)
            detail = f"holds the quote that closes the one opened on line {opened + 1} ({_span(opened + 1, start + 1)} "
            yield start + 1, BadSampleError("unbalanced_quote", detail + "would be one row)")
            position += 1
            continue
        fields, position = records.read(start)
        first, last = start + 1, position  # 1-based lines of the record
        if isinstance(fields, csv.Error) and last == first and "end of data" not in str(fields):
            yield first, BadSampleError("malformed_csv", f"not CSV: {fields}")
            continue
        inside = None
        if last > first and not isinstance(fields, csv.Error):
            inside = next((i + 1 for i in range(start + 1, position) if shape.matches(lines[i])), None)
        if isinstance(fields, csv.Error) or inside is not None:
            yield first, _unbalanced(fields, first, last, len(lines), inside)
            if inside is not None and last > first:
                closing[last - 1] = start
            position = start + 1  # the lines it took are read again, as records of their own
            continue
        if not fields:
            yield first, BadSampleError("empty_line", "an empty line")
        elif fields == header:
            yield first, BadSampleError("malformed_csv", "a copy of the header (files joined together?)")
        elif len(fields) != len(header):
            yield first, BadSampleError("wrong_field_count", f"{len(fields)} fields, the header has {len(header)}")
        else:
            shape.learn(fields)
            yield first, dict(zip(header, fields))


def _unbalanced(fields: list[str] | csv.Error, first: int, last: int, count: int, inside: int | None) -> BadSampleError:
    """The error of a record whose quote opened on line `first` took in lines up to `last` (1-based)."""
    if inside is not None:
        detail = (
            f"the quote opened on line {first} closes on line {last}, so {_span(first, last)} would be one row, but "
            f"line {inside} reads as a row of its own (a quote left open?)"
        )
        again = (first + 1, last - 1)  # the closing line is a bad row of its own
    elif last >= count and "end of data" in str(fields):
        detail = f"the quote opened on line {first} is never closed: {_span(first, last)} would be one row"
        again = (first + 1, last)
    else:
        detail = f"the quote opened on line {first} does not close cleanly ({fields}, line {last})"
        again = (first + 1, last)
    if again[0] <= again[1]:
        detail += f"; {_span(*again)} {'is' if again[0] == again[1] else 'are'} read as rows of their own"
    return BadSampleError("unbalanced_quote", detail)


__all__ = ["csv_records"]
