# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Image-text data for MCD pretraining: loading, decoding, the bad-sample policy and the collator.

The data flow, one module per step:

1. `sources`: `load_image_text_dataset` opens a Hub dataset, an `imagefolder` directory, `.jsonl`/`.csv`/`.tsv`
   files, webdataset `.tar` shards (img2dataset's), parquet files or folders and `save_to_disk` folders (`formats`)
   and returns a `datasets` dataset with two columns, `image` (kept undecoded: a path or a `{"bytes", "path"}`
   dict) and `caption` (a string or a list of strings), of the split asked for (`splits.select_split`).
   `text_files` reads caption files row by row: a bad row (bad encoding, malformed line, wrong field count, a
   stray CSV quote, a path outside the data folder, a missing file, ...) is recorded with its file and line, not a
   dead run; `text_lines` decodes the files (UTF-8, UTF-16/32, BOMs, line ends) and `csv_records` reads CSV so
   that a stray quote costs its own row only. `shards` reads webdataset shards so that a shard cut short gives its
   whole samples and one bad row; `image_folder` lists an image folder's files so no file name is taken for a split.
   (`lazy_images` holds the evaluation side's images: decoded as here, cropped to a sane aspect ratio.)
2. `decoding`: `SampleDecoder` decodes one row (`decode_image`), resizes it to a fixed base size as uint8
   (3, S, S) (`resize_center_crop`) and draws one caption (`select_caption`); every failure is a
   `BadSampleError` naming one of `BAD_SAMPLE_REASONS`.
3. `image_text`: `ImageTextDataset` (map-style) or `IterableImageTextDataset` (streaming; `streaming` says which
   process and DataLoader worker reads which shards, reshuffled every epoch, through a seeded buffer) apply the
   bad-sample policy: bad samples are counted by reason and skipped, or raise, according to
   `on_bad_sample`; their records (`skipped.SkippedRow`) travel with the samples so they survive DataLoader
   worker processes, and end in the run's `skipped_samples.jsonl` (`skipped.save_skipped_samples`).
4. `collator`: `MCDCollator` stacks the images, tokenizes the captions, makes the MLM-masked copy of
   the ids with transformers' `DataCollatorForLanguageModeling`, and stacks the samples' pair ids for the loss.

Under `MCDTrainer`, `KeyedSamples` and `SeededCollator` make each batch's MLM mask a function of its
samples, so a resumed run masks exactly like an uninterrupted one. Random crops and augmentations happen
later, batched on the accelerator (`augmentation.py`).
"""

from .collator import MCDCollator, SeededCollator
from .decoding import (
    BAD_SAMPLE_REASONS,
    DEFAULT_MAX_CONSECUTIVE_BAD,
    DEFAULT_MAX_PIXELS,
    MAX_ASPECT_RATIO,
    ON_BAD_SAMPLE_CHOICES,
    BadSampleError,
    SampleDecoder,
    crop_to_aspect_ratio,
    decode_image,
    resize_center_crop,
    select_caption,
    valid_captions,
    validate_caption,
)
from .image_text import (
    SAMPLE_KEY,
    ImageTextDataset,
    IterableImageTextDataset,
    KeyedSamples,
    KeyedStream,
    image_text_dataset,
)
from .skipped import SKIPPED_SAMPLES_FILE, BadSampleCounter, SkippedRow, save_skipped_samples
from .sources import (
    LOCAL_EXTENSIONS,
    WEBDATASET_CAPTION_KEYS,
    WEBDATASET_IMAGE_KEYS,
    expand_braces,
    load_image_text_dataset,
)
from .streaming import DEFAULT_SHUFFLE_BUFFER_SIZE, StreamOrder
from .text_files import TEXT_FILE_EXTENSIONS, read_caption_files

__all__ = [
    "BAD_SAMPLE_REASONS",
    "DEFAULT_MAX_CONSECUTIVE_BAD",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_SHUFFLE_BUFFER_SIZE",
    "LOCAL_EXTENSIONS",
    "MAX_ASPECT_RATIO",
    "ON_BAD_SAMPLE_CHOICES",
    "SAMPLE_KEY",
    "SKIPPED_SAMPLES_FILE",
    "TEXT_FILE_EXTENSIONS",
    "WEBDATASET_CAPTION_KEYS",
    "WEBDATASET_IMAGE_KEYS",
    "BadSampleCounter",
    "BadSampleError",
    "ImageTextDataset",
    "IterableImageTextDataset",
    "KeyedSamples",
    "KeyedStream",
    "MCDCollator",
    "SampleDecoder",
    "SeededCollator",
    "SkippedRow",
    "StreamOrder",
    "crop_to_aspect_ratio",
    "decode_image",
    "expand_braces",
    "image_text_dataset",
    "load_image_text_dataset",
    "read_caption_files",
    "resize_center_crop",
    "save_skipped_samples",
    "select_caption",
    "valid_captions",
    "validate_caption",
]
