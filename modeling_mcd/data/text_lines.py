# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""The lines of a caption file as text: its encoding (UTF-8, or UTF-16/UTF-32 with or without a byte order mark),
a byte order mark at the start of any line, its line ends, and the bytes that are not text.

Data flow: `read_text(path)` -> `str` -> `physical_lines(text)` -> the lines a user sees in an editor, numbered
from 1, each keeping its line end (a CSV field may hold one). `text_problem` names what makes a piece of that text
unusable (bytes that are not UTF-8, NUL characters); `text_files` and the evaluation loaders report it with the
file and line.
"""

from __future__ import annotations

import codecs
import io
import re
from pathlib import Path

# Undecodable bytes, kept as lone surrogates by the "surrogateescape" error handler.
_BAD_BYTES = re.compile("[\udc80-\udcff]")
# Longest marks first: the UTF-32 LE mark starts with the UTF-16 LE one.
_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# Bytes looked at to tell UTF-16 without a mark: in UTF-16 text that is mostly ASCII (JSON, CSV, paths), every
# other byte is NUL; in UTF-8 text NUL never appears.
_SNIFF_BYTES = 4096


def _utf16_without_mark(data: bytes) -> str | None:
    head = data[:_SNIFF_BYTES]
    if len(head) < 4:
        return None
    even, odd = head[0::2], head[1::2]
    if head[0] and not head[1] and odd.count(0) * 2 >= len(odd) and even.count(0) * 8 < len(even):
        return "utf-16-le"
    if not head[0] and head[1] and even.count(0) * 2 >= len(even) and odd.count(0) * 8 < len(odd):
        return "utf-16-be"
    return None


def decode_text(data: bytes, path: str) -> str:
    r"""
    The text of a caption file's bytes.

    UTF-8 is the default; a byte order mark (UTF-8, UTF-16, UTF-32) chooses its encoding, and UTF-16 without one
    is recognised by its NUL bytes. In UTF-8 text, bytes that are not UTF-8 become lone surrogates
    (`surrogateescape`) so that each line holding some can be named by itself (`text_problem`).

    Args:
        data (`bytes`): the file's content.
        path (`str`): the file, for the error message.

    Raises:
        ValueError: a UTF-16 or UTF-32 file whose bytes are not valid in it, naming the file, the encoding and the
            line.
    """
    encoding, start = next(((name, len(mark)) for mark, name in _BYTE_ORDER_MARKS if data.startswith(mark)), (None, 0))
    if encoding is None:
        encoding = _utf16_without_mark(data) or "utf-8"
    if encoding == "utf-8":
        return data[start:].decode("utf-8", errors="surrogateescape")
    try:
        return data[start:].decode(encoding)
    except UnicodeDecodeError as error:
        line = data[start : start + error.start].decode(encoding, errors="replace").count("\n") + 1
        raise ValueError(f"{path} is {encoding.upper()} text, but its line {line} is not: {error}") from None


def read_text(path: str) -> str:
    """The text of the file at `path` (`decode_text`); a file that cannot be opened is a `ValueError` naming it."""
    try:
        with Path(path).open("rb") as f:
            data = f.read()
    except OSError as error:
        raise ValueError(f"cannot read the caption file {path}: {error}") from error
    return decode_text(data, path)


def physical_lines(text: str) -> list[str]:
    """The lines of `text`, each with its line end (`\\n`, `\\r\\n` or, for old Mac files, `\\r`), without a byte
    order mark at its start: files joined with `cat` keep each one's mark."""
    return [line.removeprefix("\ufeff") for line in io.StringIO(text, newline="").readlines()]


def strip_line_end(line: str) -> str:
    return line.removesuffix("\n").removesuffix("\r")


def undecodable_bytes(text: str) -> str | None:
    """The first byte of `text` that is not UTF-8 (kept as a surrogate by `decode_text`), in words, or `None`."""
    match = _BAD_BYTES.search(text)
    if match is None:
        return None
    byte = ord(match.group()) - 0xDC00
    return f"byte 0x{byte:02x} at character {match.start()} is not UTF-8"


def text_problem(text: str) -> str | None:
    """What makes `text` not text, or `None`: bytes that are not UTF-8 (`undecodable_bytes`), or NUL characters
    (UTF-16 text pasted into a UTF-8 file, or binary data)."""
    if problem := undecodable_bytes(text):
        return problem
    position = text.find("\x00")
    if position >= 0:
        return f"a NUL character at character {position} (UTF-16 text, or binary data, in a UTF-8 file?)"
    return None


__all__ = ["decode_text", "physical_lines", "read_text", "strip_line_end", "text_problem", "undecodable_bytes"]
