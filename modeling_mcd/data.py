# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Image-text data for MCD pretraining: loading, decoding, the bad-sample policy and the collator.

Data flow (DESIGN.md, step 1):

1. `load_image_text_dataset` opens a Hub dataset, an `imagefolder` directory, `.jsonl`/`.csv` files or
   webdataset `.tar` shards and returns a `datasets` dataset with two columns, `image` (kept
   undecoded: a path or a `{"bytes", "path"}` dict) and `caption` (a string or a list of strings).
2. `ImageTextDataset` (map-style) or `IterableImageTextDataset` (streaming) decodes each image, resizes
   it to a fixed base size as uint8 and draws one caption. Bad samples are counted by reason and
   skipped, or raise, according to `on_bad_sample`; the counts travel with the samples so they survive
   DataLoader worker processes.
3. `MCDCollator` stacks the images, tokenizes the captions and makes the MLM-masked copy of the ids
   with transformers' `DataCollatorForLanguageModeling`.

Random crops and augmentations happen later, batched on the accelerator (`augmentation.py`).
"""

from __future__ import annotations

import glob
import io
import os
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np
import torch
from PIL import Image, ImageOps
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerBase
from transformers.utils import logging

logger = logging.get_logger(__name__)

BAD_SAMPLE_REASONS = (
    "missing_file",
    "empty_file",
    "not_an_image",
    "corrupt",
    "truncated",
    "decompression_bomb",
    "empty_caption",
    "non_text_caption",
)
ON_BAD_SAMPLE_CHOICES = ("skip", "raise")
# 8192 x 8192: far above any pretraining image, far below what exhausts a dataloader worker's memory.
DEFAULT_MAX_PIXELS = 8192 * 8192
DEFAULT_MAX_CONSECUTIVE_BAD = 100
WEBDATASET_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
WEBDATASET_CAPTION_KEYS = ("txt",)
LOCAL_EXTENSIONS = (".jsonl", ".json", ".csv", ".tar")


class BadSampleError(ValueError):
    r"""
    A sample that cannot be used for training: an unreadable image or an unusable caption.

    Args:
        reason (`str`): one of `BAD_SAMPLE_REASONS`, the key under which the sample is counted.
        detail (`str`): what was wrong, naming the file or the row.
    """

    def __init__(self, reason: str, detail: str):
        if reason not in BAD_SAMPLE_REASONS:
            raise ValueError(f"unknown bad-sample reason {reason!r}; expected one of {BAD_SAMPLE_REASONS}")
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")

    def __reduce__(self):
        # Exceptions pickle through `args`; keep both fields so the error crosses DataLoader workers intact.
        return (type(self), (self.reason, self.detail))


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


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
    """The local files named by `source` (a path, a glob or a brace list); empty when none exist."""
    files: list[str] = []
    for pattern in expand_braces(source):
        if glob.has_magic(pattern):
            files.extend(sorted(glob.glob(pattern)))
        elif os.path.isfile(pattern):
            files.append(pattern)
    return files


def _column_names(dataset: datasets.Dataset | datasets.IterableDataset) -> list[str]:
    if dataset.column_names is not None:
        return list(dataset.column_names)
    # A streaming dataset whose features are not known in advance: look at its first row.
    return list(next(iter(dataset)).keys())


def _require_column(columns: Sequence[str], name: str, argument: str, source: str) -> None:
    if name not in columns:
        raise ValueError(f"{argument}={name!r} is not a column of {source!r}; its columns are {sorted(columns)}")


def _lazy_images(
    dataset: datasets.Dataset | datasets.IterableDataset, column: str = "image"
) -> datasets.Dataset | datasets.IterableDataset:
    """Cast an `Image` column to `decode=False` so rows hold raw bytes/paths for `decode_image`."""
    features = dataset.features
    if features is not None and isinstance(features.get(column), datasets.Image) and features[column].decode:
        return dataset.cast_column(column, datasets.Image(decode=False))
    return dataset


def _normalise_columns(
    dataset: datasets.Dataset | datasets.IterableDataset, image_column: str, caption_column: str, source: str
) -> datasets.Dataset | datasets.IterableDataset:
    """Keep `image_column` and `caption_column` only, renamed to `image` and `caption`."""
    columns = _column_names(dataset)
    _require_column(columns, image_column, "image_column", source)
    _require_column(columns, caption_column, "caption_column", source)
    dataset = dataset.select_columns([image_column, caption_column])
    for old, new in ((image_column, "image"), (caption_column, "caption")):
        if old != new:
            dataset = dataset.rename_column(old, new)
    return _lazy_images(dataset)


def _resolve_paths(example: dict[str, Any], column: str, base_dir: str) -> dict[str, Any]:
    path = example[column]
    if isinstance(path, str) and path and not os.path.isabs(path):
        path = os.path.join(base_dir, path)
    return {column: path}


def _load_table_files(
    files: list[str],
    kind: str,
    split: str,
    image_column: str,
    caption_column: str,
    streaming: bool,
    source: str,
    **kwargs,
) -> datasets.Dataset | datasets.IterableDataset:
    """`.jsonl`/`.csv` files: image paths are relative to the directory of the file that names them."""
    by_dir: dict[str, list[str]] = {}
    for path in files:
        by_dir.setdefault(os.path.dirname(os.path.abspath(path)), []).append(path)
    parts = []
    for base_dir, dir_files in by_dir.items():
        part = datasets.load_dataset(kind, data_files={split: dir_files}, split=split, streaming=streaming, **kwargs)
        _require_column(_column_names(part), image_column, "image_column", source)
        part = part.map(_resolve_paths, fn_kwargs={"column": image_column, "base_dir": base_dir})
        parts.append(part)
    dataset = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    return _normalise_columns(dataset, image_column, caption_column, source)


def _webdataset_image(example: dict[str, Any], image_keys: Sequence[str]) -> dict[str, Any]:
    # A shard may mix extensions: each sample holds one image key, the others are None.
    for key in image_keys:
        value = example[key]
        if value is not None:
            # Name the shard in the path so that bad-sample messages point at the right tar file.
            return {"image": {"bytes": value["bytes"], "path": f"{example['__url__']}/{value['path']}"}}
    return {"image": None}


def _load_webdataset(
    files: list[str], split: str, image_column: str, caption_column: str, streaming: bool, source: str, **kwargs
) -> datasets.Dataset | datasets.IterableDataset:
    dataset = datasets.load_dataset(
        "webdataset", data_files={split: files}, split=split, streaming=streaming, **kwargs
    )
    columns = _column_names(dataset)
    if image_column == "image" and "image" not in columns:
        image_keys = [key for key in WEBDATASET_IMAGE_KEYS if key in columns]
        if not image_keys:
            raise ValueError(
                f"no image in the webdataset shards {source!r}: expected one of {WEBDATASET_IMAGE_KEYS} "
                f"(or pass image_column); the shards hold {sorted(columns)}"
            )
        for key in image_keys:
            dataset = dataset.cast_column(key, datasets.Image(decode=False))
        dataset = dataset.map(_webdataset_image, fn_kwargs={"image_keys": image_keys})
    if caption_column == "caption" and "caption" not in columns:
        caption_column = next((key for key in WEBDATASET_CAPTION_KEYS if key in columns), caption_column)
    return _normalise_columns(dataset, image_column, caption_column, source)


def load_image_text_dataset(
    source: str,
    split: str = "train",
    image_column: str = "image",
    caption_column: str = "caption",
    streaming: bool = False,
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
              caption columns);
            - `.jsonl`/`.json`/`.csv` files (a path, a glob or a brace list) whose `image_column` holds
              image paths, relative to the directory of the file that names them, or absolute;
            - webdataset `.tar` shards (a path, a glob or a brace list such as `"data/{000..099}.tar"`)
              with `jpg`/`jpeg`/`png`/`webp` + `txt` members per sample (used when `image_column` /
              `caption_column` are left at their defaults);
            - otherwise, a dataset on the Hub, opened with `datasets.load_dataset(source, split=...)`.
        split (`str`, *optional*, defaults to `"train"`): the split to load (also the split name given
            to local files).
        image_column (`str`, *optional*, defaults to `"image"`): the column holding the image.
        caption_column (`str`, *optional*, defaults to `"caption"`): the column holding one caption (a
            string) or several (a list of strings, one of which is drawn per step).
        streaming (`bool`, *optional*, defaults to `False`): return a `datasets.IterableDataset`.
        kwargs: passed on to `datasets.load_dataset` (e.g. `cache_dir`).

    Returns:
        `datasets.Dataset` or `datasets.IterableDataset` with columns `image` and `caption`.

    Raises:
        ValueError: `image_column` or `caption_column` is missing (the message lists the columns that
            exist), or local files of an unsupported kind.
    """
    if os.path.isdir(source):
        dataset = datasets.load_dataset("imagefolder", data_dir=source, split=split, streaming=streaming, **kwargs)
        return _normalise_columns(dataset, image_column, caption_column, source)
    files = _local_files(source)
    if not files:
        if glob.has_magic(source) or "{" in source or source.lower().endswith(LOCAL_EXTENSIONS):
            raise ValueError(f"no file matches {source!r}")
        dataset = datasets.load_dataset(source, split=split, streaming=streaming, **kwargs)
        return _normalise_columns(dataset, image_column, caption_column, source)
    extensions = {os.path.splitext(path)[1].lower() for path in files}
    if extensions <= {".jsonl", ".json"}:
        return _load_table_files(files, "json", split, image_column, caption_column, streaming, source, **kwargs)
    if extensions == {".csv"}:
        return _load_table_files(files, "csv", split, image_column, caption_column, streaming, source, **kwargs)
    if extensions == {".tar"}:
        return _load_webdataset(files, split, image_column, caption_column, streaming, source, **kwargs)
    raise ValueError(
        f"cannot tell how to read {source!r}: its files end with {sorted(extensions)}; "
        "expected one kind of .jsonl/.json, .csv or .tar files, or an imagefolder directory"
    )


# ----------------------------------------------------------------------------------------------
# Decoding
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
    except Exception as error:  # noqa: BLE001 - PIL raises many types on arbitrary bytes
        raise BadSampleError("not_an_image", f"{name}: {error}") from error


def decode_image(
    value: Any, max_pixels: int | None = DEFAULT_MAX_PIXELS, draft_size: int | None = None
) -> Image.Image:
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
    except Exception as error:  # noqa: BLE001 - a decoder fails in many ways on damaged data
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


def validate_caption(value: Any) -> str:
    """Return the caption stripped of surrounding whitespace.

    Raises:
        BadSampleError: `non_text_caption` for anything but a string (None, numbers, bytes, ...);
            `empty_caption` for an empty or whitespace-only string.
    """
    if not isinstance(value, str):
        raise BadSampleError("non_text_caption", f"caption is a {type(value).__name__}, not a string: {value!r:.80}")
    caption = value.strip()
    if not caption:
        raise BadSampleError("empty_caption", f"caption is empty: {value!r}")
    return caption


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
    valid, first_error = [], None
    for item in value:
        try:
            valid.append(validate_caption(item))
        except BadSampleError as error:
            first_error = first_error or error
    if not valid:
        raise first_error or BadSampleError("empty_caption", "empty list of captions")
    draw = np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0]
    return valid[int(draw) % len(valid)]


# ----------------------------------------------------------------------------------------------
# The bad-sample policy
# ----------------------------------------------------------------------------------------------


def _image_name(image: Any) -> str:
    if isinstance(image, Mapping):
        return str(image.get("path") or "<bytes>")
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    return f"<{type(image).__name__}>"


class _ImageTextSampleMixin:
    """What the map-style and iterable twins share: turning one raw row into a training sample."""

    def _init_policy(self, image_size, on_bad_sample, max_pixels, seed, max_consecutive_bad):
        if on_bad_sample not in ON_BAD_SAMPLE_CHOICES:
            raise ValueError(f"on_bad_sample must be one of {ON_BAD_SAMPLE_CHOICES}, got {on_bad_sample!r}")
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        if max_consecutive_bad < 1:
            raise ValueError(f"max_consecutive_bad must be positive, got {max_consecutive_bad}")
        self.image_size = image_size
        self.on_bad_sample = on_bad_sample
        self.max_pixels = max_pixels
        self.seed = seed
        self.max_consecutive_bad = max_consecutive_bad
        self.epoch = 0

    def _make_sample(self, row: Mapping[str, Any], index: int, where: str) -> dict[str, Any]:
        """Decode one row; raises `BadSampleError` whose detail names `where` (row/stream position) and file."""
        try:
            caption = select_caption(row["caption"], seed=self.seed, index=index, epoch=self.epoch)
            image = decode_image(row["image"], max_pixels=self.max_pixels, draft_size=self.image_size)
        except BadSampleError as error:
            raise BadSampleError(error.reason, f"{where} ({_image_name(row['image'])}): {error.detail}") from error
        return {"pixel_values": resize_center_crop(image, self.image_size), "caption": caption}

    def _too_many_bad(self, count: int, where: str, reasons: Counter) -> RuntimeError:
        return RuntimeError(
            f"{count} bad samples in a row from {where} ({dict(reasons)}): the data source looks broken; "
            "check the image/caption columns and the files they point to"
        )


class ImageTextDataset(_ImageTextSampleMixin, torch.utils.data.Dataset):
    r"""
    Map-style training samples from an image-text dataset, with the bad-sample policy.

    `dataset[i]` is `{"pixel_values": uint8 (3, S, S), "caption": str, "skipped": {reason: count}}`.
    When row `i` is bad and `on_bad_sample="skip"`, its reason is counted and logged at debug level
    and the next good row (i+1, i+2, ..., wrapping) is returned instead, so every batch keeps its size
    (a global batch split across processes needs equal shapes). Only row `i`'s own reason is counted:
    a bad row met while looking ahead is counted when it is itself requested, so one pass over the
    indices counts each bad row once. The counts ride in `skipped` so they survive DataLoader workers.

    Args:
        hf_dataset (`datasets.Dataset` or a sequence of dicts): rows with `image` and `caption`, as made
            by `load_image_text_dataset`. `Image` columns are cast to `decode=False` (decoded here).
        image_size (`int`): the base side length S.
        on_bad_sample (`str`, *optional*, defaults to `"skip"`): `"skip"` or `"raise"`.
        max_pixels (`int`, *optional*, defaults to `DEFAULT_MAX_PIXELS`): see `decode_image`.
        seed (`int`, *optional*, defaults to 0): seed of the caption draw for multi-caption rows.
        max_consecutive_bad (`int`, *optional*, defaults to 100): raise `RuntimeError` when this many
            rows in a row are bad, even under `"skip"`.
    """

    def __init__(
        self,
        hf_dataset: datasets.Dataset | Sequence[Mapping[str, Any]],
        image_size: int,
        on_bad_sample: str = "skip",
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        seed: int = 0,
        max_consecutive_bad: int = DEFAULT_MAX_CONSECUTIVE_BAD,
    ):
        if isinstance(hf_dataset, datasets.IterableDataset):
            raise TypeError("a streaming dataset has no random access: use IterableImageTextDataset")
        self._init_policy(image_size, on_bad_sample, max_pixels, seed, max_consecutive_bad)
        self.dataset = _lazy_images(hf_dataset) if isinstance(hf_dataset, datasets.Dataset) else hf_dataset
        if len(self.dataset) == 0:
            raise ValueError("the dataset is empty")

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that seeds the caption draw (called by accelerate/Trainer between epochs)."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, Any]:
        size = len(self.dataset)
        tries = min(size, self.max_consecutive_bad + 1)
        reasons: Counter = Counter()  # every bad row met, for the error message
        for offset in range(tries):
            row_index = (index + offset) % size
            try:
                sample = self._make_sample(self.dataset[row_index], row_index, f"row {row_index}")
            except BadSampleError as error:
                if self.on_bad_sample == "raise":
                    raise
                logger.debug("skipping bad sample: %s", error)
                reasons[error.reason] += 1
                if offset == 0:
                    own_reason = error.reason
                continue
            # Count only the requested row: look-ahead rows are counted when they are requested.
            sample["skipped"] = {own_reason: 1} if offset else {}
            return sample
        raise self._too_many_bad(tries, f"row {index}", reasons)


class IterableImageTextDataset(_ImageTextSampleMixin, torch.utils.data.IterableDataset):
    r"""
    The streaming twin of `ImageTextDataset`, for `datasets.IterableDataset` sources (webdataset shards,
    streamed Hub datasets). Same samples and the same policy; a skipped sample is simply not yielded,
    and its reason rides in the `skipped` dict of the next sample yielded.

    Worker sharding is the source's job: a `datasets.IterableDataset` splits its shards across
    DataLoader workers by itself. The caption draw uses the position in this worker's stream as index.

    Args:
        source (`datasets.IterableDataset` or any iterable of dicts): rows with `image` and `caption`.
        image_size (`int`): the base side length S.
        on_bad_sample (`str`, *optional*, defaults to `"skip"`): `"skip"` or `"raise"`.
        max_pixels (`int`, *optional*, defaults to `DEFAULT_MAX_PIXELS`): see `decode_image`.
        seed (`int`, *optional*, defaults to 0): seed of the caption draw for multi-caption rows.
        max_consecutive_bad (`int`, *optional*, defaults to 100): raise `RuntimeError` when this many
            samples in a row are bad, even under `"skip"`.
    """

    def __init__(
        self,
        source: datasets.IterableDataset | Iterable[Mapping[str, Any]],
        image_size: int,
        on_bad_sample: str = "skip",
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        seed: int = 0,
        max_consecutive_bad: int = DEFAULT_MAX_CONSECUTIVE_BAD,
    ):
        self._init_policy(image_size, on_bad_sample, max_pixels, seed, max_consecutive_bad)
        self.source = _lazy_images(source) if isinstance(source, datasets.IterableDataset) else source

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch of the caption draw, and of the source's shuffling when it has one."""
        self.epoch = epoch
        if hasattr(self.source, "set_epoch"):
            self.source.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        skipped: Counter = Counter()  # reasons since the last sample yielded
        in_a_row = 0
        for position, row in enumerate(self.source):
            try:
                sample = self._make_sample(row, position, f"sample {position} of the stream")
            except BadSampleError as error:
                if self.on_bad_sample == "raise":
                    raise
                logger.debug("skipping bad sample: %s", error)
                skipped[error.reason] += 1
                in_a_row += 1
                if in_a_row >= self.max_consecutive_bad:
                    raise self._too_many_bad(in_a_row, f"sample {position - in_a_row + 1}", skipped) from error
                continue
            sample["skipped"] = dict(skipped)
            skipped.clear()
            in_a_row = 0
            yield sample
        if skipped:
            logger.debug("the stream ended after %d bad samples that no sample could report: %s", in_a_row, skipped)


def image_text_dataset(
    dataset: datasets.Dataset | datasets.IterableDataset, image_size: int, **kwargs
) -> ImageTextDataset | IterableImageTextDataset:
    """Wrap `dataset` in `ImageTextDataset` or, when it streams, in `IterableImageTextDataset`.

    Args:
        dataset: the output of `load_image_text_dataset`.
        image_size: the base side length S.
        kwargs: `on_bad_sample`, `max_pixels`, `seed`, `max_consecutive_bad`.
    """
    if isinstance(dataset, (datasets.IterableDataset, torch.utils.data.IterableDataset)):
        return IterableImageTextDataset(dataset, image_size, **kwargs)
    return ImageTextDataset(dataset, image_size, **kwargs)


@dataclass
class BadSampleCounter:
    """Running totals of skipped samples by reason, fed with the collator's `bad_samples` dicts."""

    counts: Counter = field(default_factory=Counter)

    def update(self, skipped: Mapping[str, int]) -> None:
        """Add one `skipped`/`bad_samples` dict (reason -> count)."""
        self.counts.update({reason: int(count) for reason, count in skipped.items() if count})

    def as_dict(self) -> dict[str, int]:
        """The counts by reason, reasons sorted."""
        return dict(sorted(self.counts.items()))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """One line for the logs, e.g. `"3 bad samples skipped (corrupt=1, missing_file=2)"`."""
        if not self.total:
            return "0 bad samples skipped"
        detail = ", ".join(f"{reason}={count}" for reason, count in self.as_dict().items())
        return f"{self.total} bad samples skipped ({detail})"


# ----------------------------------------------------------------------------------------------
# Collator
# ----------------------------------------------------------------------------------------------


@dataclass
class MCDCollator:
    r"""
    Batch the samples of `ImageTextDataset`: stack images, tokenize captions, mask a copy for MLM.

    Returns a dict with
    - `pixel_values`: uint8 (B, 3, S, S), still at the base size (augmentation runs on the accelerator);
    - `input_ids`, `attention_mask` (and `token_type_ids` when the tokenizer makes them): (B, L), the
      captions truncated to `max_length` and padded to the longest (or to `pad_to_multiple_of`);
    - `mlm_input_ids`, `mlm_labels`: (B, L), the masked copy of `input_ids` and its labels (-100 where
      not masked), made by transformers' `DataCollatorForLanguageModeling` (15% of the non-special,
      non-padding tokens; 80% -> [MASK], 10% -> random, 10% kept). Absent when `mlm_probability=0`;
    - `bad_samples`: {reason: count} over the batch's `skipped` dicts (pop it before the model).

    Args:
        tokenizer (`PreTrainedTokenizerBase`): the text tower's tokenizer (needs a mask token for MLM).
        max_length (`int`, *optional*, defaults to 32): captions are truncated to this many tokens.
        mlm_probability (`float`, *optional*, defaults to 0.15): share of tokens masked; 0 disables MLM.
        pad_to_multiple_of (`int`, *optional*): pad the length to a multiple of this.
        seed (`int`, *optional*): seed of the masking generator (per DataLoader worker: seed + worker id,
            as in `DataCollatorForLanguageModeling`); `None` uses torch's global RNG.
    """

    tokenizer: PreTrainedTokenizerBase
    max_length: int = 32
    mlm_probability: float = 0.15
    pad_to_multiple_of: int | None = None
    seed: int | None = None

    def __post_init__(self):
        if self.max_length < 2:
            raise ValueError(f"max_length must be at least 2 (room for the special tokens), got {self.max_length}")
        if self.pad_to_multiple_of is not None and self.max_length % self.pad_to_multiple_of:
            # The tokenizer refuses this pair too, but only at the first batch.
            raise ValueError(
                f"max_length={self.max_length} must be a multiple of pad_to_multiple_of={self.pad_to_multiple_of}"
            )
        if not 0.0 <= self.mlm_probability <= 1.0:
            raise ValueError(f"mlm_probability must be in [0, 1], got {self.mlm_probability}")
        self.mlm_collator = None
        if self.mlm_probability > 0:
            self.mlm_collator = DataCollatorForLanguageModeling(
                tokenizer=self.tokenizer,
                mlm=True,
                mlm_probability=self.mlm_probability,
                pad_to_multiple_of=self.pad_to_multiple_of,
                seed=self.seed,
            )

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not examples:
            raise ValueError("cannot collate an empty list of examples")
        shapes = {tuple(example["pixel_values"].shape) for example in examples}
        if len(shapes) != 1:
            raise ValueError(f"pixel_values of one batch must share a shape, got {sorted(shapes)}")
        pixel_values = torch.stack([torch.as_tensor(example["pixel_values"]) for example in examples])  # (B, 3, S, S)
        text = self.tokenizer(
            [example["caption"] for example in examples],
            truncation=True,
            max_length=self.max_length,
            padding="longest",
            pad_to_multiple_of=self.pad_to_multiple_of,
            return_special_tokens_mask=self.mlm_collator is not None,
            return_tensors="pt",
        )
        batch = {"pixel_values": pixel_values, **text}
        if self.mlm_collator is not None:
            # Padding is never a masking candidate, whatever the tokenizer reports for it.
            special = batch.pop("special_tokens_mask") | (1 - batch["attention_mask"])  # (B, L)
            features = [
                {"input_ids": ids, "special_tokens_mask": mask} for ids, mask in zip(batch["input_ids"], special)
            ]
            masked = self.mlm_collator(features)  # already padded: its pad() is a no-op on the length
            batch["mlm_input_ids"], batch["mlm_labels"] = masked["input_ids"], masked["labels"]
        bad_samples: Counter = Counter()
        for example in examples:
            bad_samples.update(example.get("skipped") or {})
        batch["bad_samples"] = dict(bad_samples)
        return batch


__all__ = [
    "BAD_SAMPLE_REASONS",
    "BadSampleCounter",
    "BadSampleError",
    "DEFAULT_MAX_PIXELS",
    "ImageTextDataset",
    "IterableImageTextDataset",
    "MCDCollator",
    "decode_image",
    "expand_braces",
    "image_text_dataset",
    "load_image_text_dataset",
    "resize_center_crop",
    "select_caption",
    "validate_caption",
]
