# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""A hostile caption corpus, written in a tmp dir: good rows (with good edge cases: 16-bit, CMYK, palette with
transparency, EXIF rotation, odd sizes, two captions of one image, mixed caption types, CRLF, a BOM, a BOM opening a
line) mixed with more than twenty-five kinds of bad row, image-level and file-level, each at a known line. Used by
tests/test_data_text_files.py (reading) and tests/test_run_mcd.py (a whole run). Nothing binary is committed: every
file is made here."""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np
from _data_helpers import solid, write_bad_files
from PIL import Image

#: Bad rows found only when their image is decoded (the rest are found while reading the caption file).
DECODE_REASONS = ("not_an_image", "corrupt", "truncated", "decompression_bomb")


@dataclass
class Corpus:
    """Where the corpus is, and what each line of its caption file is."""

    path: str  # the caption file (JSON Lines)
    good: dict[int, str] = field(default_factory=dict)  # line -> the image file it names (resolved)
    bad: dict[int, tuple[str, str | None]] = field(default_factory=dict)  # line -> (reason, column or None)
    kinds: dict[int, str] = field(default_factory=dict)  # line -> what is wrong, in words

    @property
    def decode_bad(self) -> dict[int, str]:
        """The bad lines found only when decoding: line -> reason."""
        return {line: reason for line, (reason, _) in self.bad.items() if reason in DECODE_REASONS}

    @property
    def load_bad(self) -> dict[int, tuple[str, str | None]]:
        return {line: value for line, value in self.bad.items() if value[0] not in DECODE_REASONS}


def png_bomb(width: int = 40_000, height: int = 40_000) -> bytes:
    """A PNG header that claims `width` x `height` pixels, without the pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def _edge_images(directory: str) -> dict[str, str]:
    """Good images that decoders get wrong: name -> path."""
    paths = {}

    def save(name: str, image: Image.Image, **kwargs) -> None:
        paths[name] = os.path.join(directory, name)
        image.save(paths[name], **kwargs)

    save("sixteen.png", Image.fromarray(np.arange(0, 65535, 65535 // 99, dtype=np.uint16)[:99].reshape(9, 11)))
    save("cmyk.jpg", Image.new("CMYK", (11, 9), (10, 200, 30, 5)))
    palette = Image.new("P", (11, 9))
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * (254 * 3))
    palette.putdata([i % 2 for i in range(99)])
    save("palette.png", palette, transparency=1)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    save("rotated.jpg", solid(30, size=(13, 7)), exif=exif)
    save("tiny.png", solid(31, size=(1, 1)))
    save("thin.png", solid(32, size=(1, 40)))
    save("gray.png", solid(33).convert("L"))
    save("rgba.png", solid(34).convert("RGBA"))
    return paths


def write_bad_corpus(root) -> Corpus:
    r"""
    Write `root/data/captions.jsonl` (with its images under `root/data`) and a file outside `root/data`.

    Returns:
        [`Corpus`]: every line's fate.
    """
    data = os.path.join(root, "data")
    images = os.path.join(data, "images")
    os.makedirs(images, exist_ok=True)
    os.makedirs(os.path.join(data, "a_folder.jpg"), exist_ok=True)
    solid(40).save(os.path.join(root, "outside.png"))
    bad_files = write_bad_files(os.path.join(data, "bad"))
    with open(os.path.join(data, "bad", "bomb.png"), "wb") as f:
        f.write(png_bomb())
    with open(os.path.join(data, "bad", "gif.jpg"), "wb") as f:
        f.write(b"GIF89a, or so it claims")
    corpus = Corpus(path=os.path.join(data, "captions.jsonl"))
    lines: list[bytes] = []

    def good(image: str, caption, note: str, **extra) -> None:
        lines.append(json.dumps({"image": image, "caption": caption, **extra}).encode())
        corpus.good[len(lines)] = os.path.normpath(os.path.join(data, image))
        corpus.kinds[len(lines)] = note

    def bad(line: bytes | dict, reason: str, column: str | None, note: str) -> None:
        lines.append(line if isinstance(line, bytes) else json.dumps(line).encode())
        corpus.bad[len(lines)] = (reason, column)
        corpus.kinds[len(lines)] = note

    for k in range(8):
        solid(k).save(os.path.join(images, f"{k}.png"))
    edge = _edge_images(images)
    good("images/0.png", "a red photo", "a plain row")
    bad(b"", "empty_line", None, "an empty line")
    good("images/1.png", ["a cat", "a small cat"], "a list of captions")
    bad(b'{"image": "images/2.png", "caption": "a caf\xe9 sign"}', "bad_encoding", "caption", "Latin-1 caption")
    good("images/2.png", "a dog", "a string caption after a list one (mixed types)")
    bad(b'{"image": "images/3.png", "caption": "a cat"', "malformed_json", None, "a line cut short")
    bad(b'["images/3.png", "a cat"]', "malformed_json", None, "an array, not an object")
    bad(b"   \t ", "empty_line", None, "a blank line")
    good("images/3.png", "a bird", "a row with bad bytes in an unused column", extra="x")
    lines[-1] = lines[-1][:-1] + b', "extra": "\xff\xfe"}'
    bad({"image": "images/4.png"}, "missing_value", "caption", "no caption key")
    bad({"image": "images/4.png", "caption": None}, "missing_value", "caption", "a null caption")
    bad({"caption": "a cat"}, "missing_value", "image", "no image key")
    bad({"image": "", "caption": "a cat"}, "missing_value", "image", "an empty image path")
    bad({"image": 17, "caption": "a cat"}, "non_text_path", "image", "a number as image path")
    bad({"image": "images/4.png", "caption": 42}, "non_text_caption", "caption", "a number as caption")
    bad({"image": "images/4.png", "caption": [1, None]}, "non_text_caption", "caption", "a list of non-text")
    bad({"image": "images/4.png", "caption": ""}, "empty_caption", "caption", "an empty caption")
    bad({"image": "images/4.png", "caption": "  \n "}, "empty_caption", "caption", "a blank caption")
    bad({"image": "images/4.png", "caption": []}, "empty_caption", "caption", "an empty list of captions")
    bad({"image": "../outside.png", "caption": "a cat"}, "path_outside_data", "image", "a path leaving the folder")
    bad(b'{"image": "images/\xff.png", "caption": "a cat"}', "bad_encoding", "image", "bad bytes in the path")
    bad({"image": "images/missing.png", "caption": "a cat"}, "missing_file", "image", "a missing file")
    bad({"image": "bad/zero.jpg", "caption": "a cat"}, "empty_file", "image", "a zero-byte file")
    bad({"image": "a_folder.jpg", "caption": "a cat"}, "missing_file", "image", "a folder, not a file")
    bad({"image": "images/4.png", "caption": "\u200b\u200d\ufeff"}, "empty_caption", "caption", "zero-width only")
    bad({"image": "images/4\x00.png", "caption": "a cat"}, "bad_encoding", "image", "a NUL in the image path")
    bad(b'{"image": "images/4.png", "caption": "a cat", "caption": "a dog"}', "malformed_json", None, "a key twice")
    bad(json.dumps({"image": "images/4.png", "caption": "a cat"}).encode("utf-16-le"), "bad_encoding", None, "UTF-16")
    good("images/7.png", "a byte order mark opens this line", "a BOM at the start of a line (files joined by cat)")
    lines[-1] = b"\xef\xbb\xbf" + lines[-1]
    good("images/4.png", "a fish", "CRLF line ending")
    lines[-1] += b"\r"
    for reason in ("not_an_image", "corrupt", "truncated"):
        bad({"image": os.path.relpath(bad_files[reason], data), "caption": "a cat"}, reason, "image", reason)
    bad({"image": "bad/gif.jpg", "caption": "a cat"}, "not_an_image", "image", "a GIF header and junk")
    bad({"image": "bad/bomb.png", "caption": "a cat"}, "decompression_bomb", "image", "a 40000 x 40000 header")
    good("images/0.png", "a red square", "a second caption of the first image (one pair id)")
    good(os.path.abspath(os.path.join(images, "5.png")), "a sunny sky", "an absolute path")
    for name in edge:
        good(f"images/{name}", f"an edge case {name.split('.')[0]}", f"a good edge case: {name}")
    good("images/6.png", "the last row", "the last line, without a newline")
    with open(corpus.path, "wb") as f:
        f.write(b"\xef\xbb\xbf" + b"\n".join(lines))  # a BOM, and no newline after the last line
    return corpus
