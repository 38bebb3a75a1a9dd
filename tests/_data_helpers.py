# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Fixtures shared by the tests of modeling_mcd.data (test_data_*.py).

Everything is made in tmp dirs: tiny images written with PIL, a WordPiece tokenizer built from a vocab list.
Nothing is downloaded.
"""

from __future__ import annotations

import csv
import io
import json
import os

import numpy as np
import torch
from PIL import Image
from transformers import BertTokenizer

SIZE = 7  # odd base size
WORDS = [
    "a",
    "an",
    "the",
    "photo",
    "picture",
    "of",
    "cat",
    "dog",
    "bird",
    "red",
    "green",
    "blue",
    "small",
    "big",
    "on",
    "under",
    "mat",
    "tree",
    "sky",
    "sits",
    "runs",
]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def word_tokenizer() -> BertTokenizer:
    return BertTokenizer(vocab={token: i for i, token in enumerate(SPECIALS + WORDS)})


def color(k: int) -> tuple[int, int, int]:
    """A distinct solid colour per good image, so a returned sample tells which row it came from."""
    return (10 * k % 256, 255 - 10 * k % 256, 3 * k % 256)


def solid(k: int, size=(11, 9)) -> Image.Image:
    return Image.new("RGB", size, color(k))


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def expected_pixels(k: int) -> torch.Tensor:
    return torch.tensor(color(k), dtype=torch.uint8).view(3, 1, 1).expand(3, SIZE, SIZE)


def write_bad_files(directory) -> dict[str, str]:
    """One file per image failure kind; returns reason -> path."""
    os.makedirs(directory, exist_ok=True)
    png = bytearray(encode(Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8))))
    for i in range(60, len(png) - 20):  # keep the header, scramble the compressed data
        png[i] ^= 0x5A
    jpeg = encode(Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)), "JPEG")
    # The header claims 3000 x 3000 pixels but the data is cut: only a header-first check names it a bomb.
    bomb = encode(Image.new("L", (3000, 3000)))[:200]
    contents = {
        "corrupt": bytes(png),
        "truncated": jpeg[: len(jpeg) // 2],
        "empty_file": b"",
        "not_an_image": b"this is a caption file, not a picture\n",
        "decompression_bomb": bomb,
    }
    names = {"corrupt": "corrupt.png", "truncated": "cut.jpg", "empty_file": "zero.jpg", "not_an_image": "text.jpg"}
    paths = {}
    for reason, data in contents.items():
        path = os.path.join(directory, names.get(reason, "bomb.png"))
        with open(path, "wb") as f:
            f.write(data)
        paths[reason] = path
    paths["missing_file"] = os.path.join(directory, "missing.jpg")
    return paths


def good_and_bad_rows(directory):
    """Rows with isolated bad samples of every kind; returns rows and {row index: reason}."""
    bad_files = write_bad_files(os.path.join(directory, "bad"))
    bad_rows = [(bad_files[reason], "a photo", reason) for reason in sorted(bad_files)]
    bad_rows += [(None, "", "empty_caption"), (None, None, "non_text_caption"), (None, 7, "non_text_caption")]
    rows, bad = [], {}
    for k in range(2 * len(bad_rows) + 1):
        if k % 2 == 1:  # bad rows at odd indices: never two in a row
            path, caption, reason = bad_rows[k // 2]
            if path is None:
                path = os.path.join(directory, f"good{k}.png")
                solid(k).save(path)
            rows.append({"image": path, "caption": caption})
            bad[k] = reason
        else:
            path = os.path.join(directory, f"good{k}.png")
            solid(k).save(path)
            rows.append({"image": path, "caption": f"the {WORDS[k % len(WORDS)]} photo"})
    return rows, bad


def write_table(path, kind, rows):
    with open(path, "w", newline="") as f:
        if kind == "json":
            f.writelines(json.dumps(row) + "\n" for row in rows)
        else:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
