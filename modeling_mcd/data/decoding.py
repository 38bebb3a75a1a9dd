# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Decoding one sample, and the bad-sample policy.

Data flow: a raw row `{"image": path | bytes | {"bytes", "path"} | PIL image, "caption": str | list[str]}`
(as `sources.load_image_text_dataset` makes it) goes through `SampleDecoder.make_sample`:

- `decode_image` opens it (header first, so a decompression bomb is refused before its pixels exist) and
  converts any PIL mode to RGB; `resize_center_crop` makes the uint8 (3, S, S) tensor;
- `select_caption` validates the caption, or draws one of a list, from (seed, epoch, index).

Every failure is a `BadSampleError` with one of `BAD_SAMPLE_REASONS` (the row-level ones of a caption file are
found earlier, by `text_files`); the datasets of `image_text` skip or raise on it (`on_bad_sample`) and
`skipped.BadSampleCounter` totals the skipped ones by reason.
"""

from __future__ import annotations

import io
import os
import unicodedata
import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from .seeding import derive_seed

BAD_SAMPLE_REASONS = (
    # the image
    "missing_file",
    "empty_file",
    "not_an_image",
    "corrupt",
    "truncated",
    "decompression_bomb",
    # the caption
    "empty_caption",
    "non_text_caption",
    # a row of a caption file (`text_files`)
    "bad_encoding",
    "malformed_json",
    "malformed_csv",
    "wrong_field_count",
    "empty_line",
    "missing_value",
    "non_text_path",
    "path_outside_data",
    "unbalanced_quote",
    # a webdataset shard cut short (`shards`): the record of its unread rest
    "truncated_shard",
)
ON_BAD_SAMPLE_CHOICES = ("skip", "raise")
# 8192 x 8192: far above any pretraining image, far below what exhausts a dataloader worker's memory.
DEFAULT_MAX_PIXELS = 8192 * 8192
DEFAULT_MAX_CONSECUTIVE_BAD = 100
# The longest side an image keeps, in multiples of its shortest, before an evaluation processor resizes it: a
# 1,000,000 x 1 strip resized to a 224 shortest edge would need 224,000,000 x 224 pixels.
MAX_ASPECT_RATIO = 4


class BadSampleError(ValueError):
    r"""
    A sample that cannot be used for training: an unreadable image or an unusable caption.

    Args:
        reason (`str`): one of `BAD_SAMPLE_REASONS`, the key under which the sample is counted.
        detail (`str`): what was wrong, naming the file or the row.
        column (`str`, *optional*): the column that holds the problem, when one does.
    """

    def __init__(self, reason: str, detail: str, column: str | None = None):
        if reason not in BAD_SAMPLE_REASONS:
            raise ValueError(f"unknown bad-sample reason {reason!r}; expected one of {BAD_SAMPLE_REASONS}")
        self.reason = reason
        self.detail = detail
        self.column = column
        super().__init__(f"{reason}: {detail}")

    def __reduce__(self):
        # Exceptions pickle through `args`; keep every field so the error crosses DataLoader workers intact.
        return (type(self), (self.reason, self.detail, self.column))


# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; transparency is composited on white, 16-bit is scaled to 8-bit."""
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        # PIL's own I;16 -> L conversion clips at 255; scale the 16-bit range instead (65535 -> 255).
        values = np.asarray(image).astype(np.float64)  # (H, W)
        gray = np.rint(np.clip(values, 0, 65535) / 257.0).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if mode == "F":
        # Float images are normalised ([0, 1]) or already on the 8-bit scale; PIL would truncate both.
        values = np.asarray(image).astype(np.float64)  # (H, W)
        scale = 255.0 if np.nanmax(values, initial=0.0) <= 1.0 else 1.0
        gray = np.rint(np.clip(np.nan_to_num(values) * scale, 0, 255)).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _open_image(value: Any) -> tuple[Image.Image, str]:
    """Open (header only) an image given as bytes, a path or a datasets dict; return it and its name."""
    if isinstance(value, Mapping):
        if value.get("bytes") is not None:
            return _open_image_bytes(value["bytes"], value.get("path") or "<bytes>")
        if value.get("path"):
            value = value["path"]
        else:
            raise BadSampleError("missing_file", f"image dict without bytes or path: {dict(value)!r}")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _open_image_bytes(bytes(value), "<bytes>")
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        if not os.path.isfile(path):
            raise BadSampleError("missing_file", f"no such file: {path}")
        if os.path.getsize(path) == 0:
            raise BadSampleError("empty_file", f"zero-byte file: {path}")
        with open(path, "rb") as f:
            return _open_image_bytes(f.read(), path)
    if value is None:
        raise BadSampleError("missing_file", "no image (None)")
    raise BadSampleError("not_an_image", f"cannot read an image from a {type(value).__name__}")


def _open_image_bytes(data: bytes, name: str) -> tuple[Image.Image, str]:
    if len(data) == 0:
        raise BadSampleError("empty_file", f"zero-byte image: {name}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data)), name
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadSampleError("decompression_bomb", f"{name}: {error}") from error
    except Exception as error:
        raise BadSampleError("not_an_image", f"{name}: {error}") from error


def image_name(image: Any) -> str:
    """The file (or kind of value) a raw image came from, for error messages."""
    if isinstance(image, Mapping):
        return str(image.get("path") or "<bytes>")
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    return f"<{type(image).__name__}>"


def decode_image(value: Any, max_pixels: int | None = DEFAULT_MAX_PIXELS, draft_size: int | None = None) -> Image.Image:
    r"""
    Decode one image to an RGB PIL image, mapping every failure to a `BadSampleError`.

    Args:
        value (`PIL.Image.Image`, `bytes`, `str`, `os.PathLike` or `dict`):
            the image: a PIL image, encoded bytes, a file path, or a datasets `{"bytes", "path"}` dict.
        max_pixels (`int`, *optional*, defaults to `DEFAULT_MAX_PIXELS`):
            the largest width x height accepted, checked from the header before the pixels are decoded.
            `None` leaves only PIL's own `Image.MAX_IMAGE_PIXELS` guard.
        draft_size (`int`, *optional*):
            when set, JPEGs are decoded at the smallest DCT scale whose sides are both >= `draft_size`
            (several times faster on photos much larger than the training size).

    Returns:
        `PIL.Image.Image` in mode RGB. Modes L, LA, P (with or without transparency), RGBA, CMYK,
        I;16/I (16-bit, scaled so that 65535 -> 255) and F are converted; alpha is composited on white.

    Raises:
        BadSampleError: with reason `missing_file`, `empty_file`, `not_an_image`, `corrupt`, `truncated`
            or `decompression_bomb`.
    """
    if isinstance(value, Image.Image):
        image, name = value, "<PIL image>"
    else:
        image, name = _open_image(value)
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise BadSampleError(
            "decompression_bomb", f"{name}: {width}x{height} = {width * height} pixels > max_pixels={max_pixels}"
        )
    try:
        if draft_size is not None and image.format == "JPEG":
            image.draft(image.mode, (draft_size, draft_size))
        image.load()
        # Photos store their rotation in EXIF; datasets' own Image decoding applies it too.
        image = ImageOps.exif_transpose(image)
        return _to_rgb(image)
    except BadSampleError:
        raise
    except Exception as error:
        reason = "truncated" if "truncated" in str(error).lower() else "corrupt"
        raise BadSampleError(reason, f"{name}: {type(error).__name__}: {error}") from error


def resize_center_crop(image: Image.Image, size: int) -> torch.Tensor:
    """Resize the shorter side to `size` and centre-crop to `size` x `size`.

    Args:
        image: an RGB PIL image.
        size: the base side length S.

    Returns:
        uint8 tensor of shape (3, S, S).
    """
    image = ImageOps.fit(image, (size, size), method=Image.Resampling.BICUBIC)
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()  # (3, S, S)


def crop_to_aspect_ratio(image: Image.Image, max_ratio: float = MAX_ASPECT_RATIO) -> Image.Image:
    """Centre-crop the longer side of `image` to at most `max_ratio` times the shorter one.

    `resize_center_crop` crops before it resizes; an image processor that resizes the shortest edge first would
    make an extreme strip enormous. A processor that centre-crops a square sees the same pixels either way.

    Args:
        image: a PIL image.
        max_ratio: the largest longer/shorter side ratio kept (`MAX_ASPECT_RATIO` by default).

    Returns:
        `image` itself when its ratio is within `max_ratio`, else its centre crop.
    """
    width, height = image.size
    short = max(1, min(width, height))
    longest = max(1, int(max_ratio * short))
    if max(width, height) <= longest:
        return image
    if width > height:
        left = (width - longest) // 2
        return image.crop((left, 0, left + longest, height))
    top = (height - longest) // 2
    return image.crop((0, top, width, top + longest))


# ----------------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------------


# Characters that show nothing: controls (NUL included), format characters (zero-width spaces and joiners, word
# joiner, BOM, soft hyphen), separators, and marks with no base. A caption made only of these tokenizes to
# `[CLS][SEP]`.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "Me"})
# Letters and symbols drawn blank: Hangul fillers, the braille blank.
_BLANK_CHARACTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
# What is stripped from a caption's ends: whitespace and controls and format characters, never a mark (the
# combining accent ending "cafe\u0301" is text).
_EDGE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})


def _is_invisible(character: str) -> bool:
    return unicodedata.category(character) in _INVISIBLE_CATEGORIES or character in _BLANK_CHARACTERS


def _strip_edges(text: str) -> str:
    start, end = 0, len(text)
    while start < end and (text[start].isspace() or unicodedata.category(text[start]) in _EDGE_CATEGORIES):
        start += 1
    while end > start and (text[end - 1].isspace() or unicodedata.category(text[end - 1]) in _EDGE_CATEGORIES):
        end -= 1
    return text[start:end]


def validate_caption(value: Any) -> str:
    """Return the caption stripped of whitespace and invisible characters (zero-width, BOM, NUL, ...) at its ends.

    Raises:
        BadSampleError: `non_text_caption` for anything but a string (None, numbers, bytes, ...);
            `empty_caption` for a string with no visible character: empty, whitespace, or only zero-width and
            format characters (U+200B-U+200D, U+2060, U+FEFF, ...), NUL and other control bytes.
    """
    if not isinstance(value, str):
        raise BadSampleError("non_text_caption", f"caption is a {type(value).__name__}, not a string: {value!r:.80}")
    caption = _strip_edges(value)
    if all(_is_invisible(character) for character in caption):
        raise BadSampleError("empty_caption", f"caption has no visible character: {value!r:.80}")
    return caption


def valid_captions(value: Any, validate: Callable[[Any], str] = validate_caption) -> list[str]:
    """The usable captions of one row: `[caption]` for a string, the valid entries of a list or tuple.

    Args:
        value: a caption, or a list/tuple of captions.
        validate: checks one caption and returns it cleaned, raising `BadSampleError` (default:
            `validate_caption`).

    Raises:
        BadSampleError: the first entry's error when no caption is usable.
    """
    if not isinstance(value, (list, tuple)):
        return [validate(value)]
    valid, first_error = [], None
    for item in value:
        try:
            valid.append(validate(item))
        except BadSampleError as error:
            first_error = first_error or error
    if not valid:
        raise first_error or BadSampleError("empty_caption", "empty list of captions")
    return valid


def select_caption(value: Any, seed: int = 0, index: int = 0, epoch: int = 0) -> str:
    """Pick the training caption of one sample.

    A list of captions gives one of its valid entries, drawn deterministically from
    (`seed`, `epoch`, `index`), so a resumed run sees the same captions and each epoch sees new ones.

    Args:
        value: a caption string, or a list/tuple of caption strings.
        seed: the run's data seed.
        index: the sample's index (row index, or position in the stream).
        epoch: the current epoch.

    Returns:
        The caption (stripped).

    Raises:
        BadSampleError: `empty_caption` / `non_text_caption` when no caption is usable.
    """
    if not isinstance(value, (list, tuple)):
        return validate_caption(value)
    valid = valid_captions(value)
    return valid[derive_seed(seed, epoch, index) % len(valid)]


# ----------------------------------------------------------------------------------------------
# The bad-sample policy
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleDecoder:
    r"""
    How one raw row becomes a training sample, and when bad rows stop being skipped: the part that
    `ImageTextDataset` and `IterableImageTextDataset` share (they differ only in how they walk their rows).

    Args:
        image_size (`int`): the base side length S.
        on_bad_sample (`str`, *optional*, defaults to `"skip"`): `"skip"` or `"raise"`.
        max_pixels (`int`, *optional*, defaults to `DEFAULT_MAX_PIXELS`): see `decode_image`.
        seed (`int`, *optional*, defaults to 0): seed of the caption draw for multi-caption rows.
        max_consecutive_bad (`int`, *optional*, defaults to 100): raise `RuntimeError` when this many
            rows in a row are bad, even under `"skip"`.
    """

    image_size: int
    on_bad_sample: str = "skip"
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    seed: int = 0
    max_consecutive_bad: int = DEFAULT_MAX_CONSECUTIVE_BAD

    def __post_init__(self):
        if self.on_bad_sample not in ON_BAD_SAMPLE_CHOICES:
            raise ValueError(f"on_bad_sample must be one of {ON_BAD_SAMPLE_CHOICES}, got {self.on_bad_sample!r}")
        if self.image_size < 1:
            raise ValueError(f"image_size must be positive, got {self.image_size}")
        if self.max_consecutive_bad < 1:
            raise ValueError(f"max_consecutive_bad must be positive, got {self.max_consecutive_bad}")

    def make_sample(self, row: Mapping[str, Any], index: int, epoch: int) -> dict[str, Any]:
        """Decode one row to `{"pixel_values": uint8 (3, S, S), "caption": str}`.

        Raises:
            BadSampleError: whose `column` is `"caption"` or `"image"`; where the row is, is the caller's to say
                (`skipped.SkippedRow`).
        """
        column = "caption"
        try:
            caption = select_caption(row["caption"], seed=self.seed, index=index, epoch=epoch)
            column = "image"
            image = decode_image(row["image"], max_pixels=self.max_pixels, draft_size=self.image_size)
        except BadSampleError as error:
            raise BadSampleError(error.reason, error.detail, column) from error
        return {"pixel_values": resize_center_crop(image, self.image_size), "caption": caption}

    def too_many_bad(self, count: int, where: str, reasons: Counter) -> RuntimeError:
        """The error for a stretch of `count` bad rows from `where`: the source itself looks broken."""
        return RuntimeError(
            f"{count} bad samples in a row from {where} ({dict(reasons)}): the data source looks broken; "
            "check the image/caption columns and the files they point to"
        )
