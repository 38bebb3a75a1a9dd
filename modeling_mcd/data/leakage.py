# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Evaluation images must never be training images: the check that stops a run before it trains on them.

Data flow: `ImageKeys.of(images)` fingerprints each evaluation set (its resolved paths, the SHA-256 of each encoded
file, and, for images held decoded, the SHA-256 of their RGB pixels) -> `find_leaks(train_images, sets)` looks up
every training image by the same keys -> `LeakError` names the set, the count and the first paths. A map-style
training set is checked whole before training (`check_no_leaks`); a stream cannot be, so `StreamLeakGuard` looks
up each row as the stream is read and stops the run at the first one.

Matching by path catches a split column ignored (the same file listed twice); matching by content catches the same
image saved under two names. Near-duplicates (re-encoded, resized) are not caught.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

#: How many of the shared images a `LeakError` names.
SHOWN = 5


class LeakError(ValueError):
    """An evaluation set shares images with the training set."""


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _pixels_digest(image: Image.Image) -> str:
    rgb = image.convert("RGB")
    return _digest(f"{rgb.size}".encode() + rgb.tobytes())


def _path_of(value: Any) -> str | None:
    """The local file an image value names (a path, or a `{"bytes", "path"}` dict whose path exists), resolved."""
    path = value.get("path") if isinstance(value, Mapping) else value
    if isinstance(path, (str, os.PathLike)) and os.path.isfile(path):
        return os.path.realpath(path)
    return None


def _encoded_bytes(value: Any) -> bytes | None:
    """The encoded image bytes of a value: its `bytes`, or its file's contents; `None` for a decoded image."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, Mapping) and value.get("bytes") is not None:
        return value["bytes"]
    path = _path_of(value)
    if path is None:
        return None
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None  # unreadable: the training side counts it as a bad sample later


def _shown(value: Any) -> str:
    path = value.get("path") if isinstance(value, Mapping) else value
    return str(path) if isinstance(path, (str, os.PathLike)) else f"<{type(value).__name__} image>"


@dataclass
class ImageKeys:
    """The fingerprints of one evaluation set: every key maps to the image's name as the user knows it."""

    name: str
    paths: dict[str, str] = field(default_factory=dict)  # resolved file path -> shown name
    contents: dict[str, str] = field(default_factory=dict)  # SHA-256 of the encoded bytes -> shown name
    pixels: dict[str, str] = field(default_factory=dict)  # SHA-256 of the RGB pixels (decoded images) -> shown name

    @classmethod
    def of(cls, name: str, images: Sequence) -> ImageKeys:
        """Fingerprint `images`: a `LazyImages` (files), PIL images, paths, bytes or `{"bytes", "path"}` dicts."""
        keys = cls(name)
        values = [str(path) for path in images.paths] if hasattr(images, "paths") else list(images)
        for value in values:
            shown = _shown(value)
            if isinstance(value, Image.Image):
                keys.pixels[_pixels_digest(value)] = shown
                continue
            if (path := _path_of(value)) is not None:
                keys.paths[path] = shown
            if (data := _encoded_bytes(value)) is not None:
                keys.contents[_digest(data)] = shown
        return keys

    def __len__(self) -> int:
        return len(self.paths) + len(self.contents) + len(self.pixels)

    def lookup(self, print_: Fingerprint) -> str | None:
        """The name of the evaluation image with the training image's fingerprint, or `None`."""
        for keys, key in ((self.paths, print_.path), (self.contents, print_.content), (self.pixels, print_.pixels)):
            if key is not None and key in keys:
                return keys[key]
        return None

    def match(self, value: Any) -> str | None:
        """The name of the evaluation image that training image `value` is, or `None`."""
        return self.lookup(fingerprint(value, with_pixels=bool(self.pixels)))


@dataclass(frozen=True)
class Fingerprint:
    """The keys of one training image, computed once and looked up in every evaluation set."""

    shown: str
    path: str | None = None  # resolved file path
    content: str | None = None  # SHA-256 of the encoded bytes
    pixels: str | None = None  # SHA-256 of the RGB pixels (a decoded image, or when asked for)


def fingerprint(value: Any, with_pixels: bool = False) -> Fingerprint:
    """The fingerprint of a training image value; the pixels are decoded only with `with_pixels` (an evaluation set
    holds decoded images) or when the value is itself a decoded image."""
    shown = _shown(value)
    if isinstance(value, Image.Image):
        return Fingerprint(shown, pixels=_pixels_digest(value))
    data = _encoded_bytes(value)
    content = _digest(data) if data is not None else None
    pixels = None
    if with_pixels and data is not None:
        try:
            with Image.open(io.BytesIO(data)) as image:
                pixels = _pixels_digest(image)
        except Exception:  # noqa: BLE001 - not an image: the training side counts it as bad later
            pixels = None
    return Fingerprint(shown, _path_of(value), content, pixels)


def leak_message(keys: ImageKeys, hits: list[tuple[str, str]], streaming: bool = False) -> str:
    """One message naming the evaluation set, the count of shared images and the first `SHOWN` of them."""
    shown = "; ".join(f"{train} = {evaluated}" for train, evaluated in hits[:SHOWN])
    count = f"{len(hits):,}" if not streaming else "at least 1 (found as the stream was read)"
    return (
        f"the evaluation set {keys.name!r} shares {count} image(s) with the training data (matched by path or "
        f"content): {shown}{'; ...' if len(hits) > SHOWN else ''}. Training on evaluation images makes its figures "
        "meaningless: train on another split (--train_split, --split_column) or evaluate on other images"
    )


def find_leaks(
    train_images: Iterable, eval_sets: Sequence[ImageKeys], workers: int = 8
) -> dict[str, list[tuple[str, str]]]:
    """Per evaluation set, `(training image, evaluation image)` for every training image it holds, in training order.
    Each training image is read and hashed once, whatever the number of sets."""
    with_pixels = any(keys.pixels for keys in eval_sets)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, os.cpu_count() or 1))) as pool:
        prints = list(pool.map(lambda value: fingerprint(value, with_pixels), train_images, chunksize=64))
    hits: dict[str, list[tuple[str, str]]] = {}
    for keys in eval_sets:
        found = [(print_.shown, hit) for print_ in prints if (hit := keys.lookup(print_)) is not None]
        if found:
            hits[keys.name] = found
    return hits


def check_no_leaks(train_images: Sequence, eval_sets: Sequence[ImageKeys]) -> None:
    """Raise `LeakError` if any evaluation set shares an image with `train_images` (every image is read once).

    Args:
        train_images: the training set's image values (paths, `{"bytes", "path"}` dicts, bytes or PIL images).
        eval_sets: the fingerprints of each evaluation set.
    """
    eval_sets = [keys for keys in eval_sets if len(keys)]
    hits = find_leaks(train_images, eval_sets) if eval_sets else {}
    for keys in eval_sets:
        if keys.name in hits:
            raise LeakError(leak_message(keys, hits[keys.name]))


class StreamLeakGuard:
    """Looks up each streamed training row in the evaluation sets; the first hit raises `LeakError`."""

    def __init__(self, eval_sets: Sequence[ImageKeys]):
        self.eval_sets = [keys for keys in eval_sets if len(keys)]

        self.with_pixels = any(keys.pixels for keys in self.eval_sets)

    def __call__(self, value: Any) -> None:
        if not self.eval_sets:
            return
        print_ = fingerprint(value, self.with_pixels)  # read and hashed once for every set
        for keys in self.eval_sets:
            if (hit := keys.lookup(print_)) is not None:
                raise LeakError(leak_message(keys, [(print_.shown, hit)], streaming=True))


def guard_training_data(train_dataset: Any, eval_sets: Mapping[str, Sequence]) -> None:
    """Make sure `train_dataset` never trains on an image of `eval_sets`.

    Args:
        train_dataset: an `image_text.ImageTextDataset`, checked whole now, or an `IterableImageTextDataset`,
            which then checks each row as it reads it.
        eval_sets: the images of each evaluation set, by name (`LazyImages`, PIL images, paths, ...).

    Raises:
        LeakError: a map-style training set shares an image with an evaluation set.
    """
    keys = [ImageKeys.of(name, images) for name, images in eval_sets.items()]
    if hasattr(train_dataset, "training_images"):
        check_no_leaks(train_dataset.training_images(), keys)
    else:
        train_dataset.leak_guard = StreamLeakGuard(keys)


__all__ = [
    "Fingerprint",
    "ImageKeys",
    "LeakError",
    "StreamLeakGuard",
    "check_no_leaks",
    "find_leaks",
    "fingerprint",
    "guard_training_data",
]
