# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Image-text data for MCD pretraining: loading, decoding, the bad-sample policy and the collator.

Data flow (DESIGN.md, step 1), one module per step:

1. `sources`: `load_image_text_dataset` opens a Hub dataset, an `imagefolder` directory, `.jsonl`/`.csv`
   files or webdataset `.tar` shards and returns a `datasets` dataset with two columns, `image` (kept
   undecoded: a path or a `{"bytes", "path"}` dict) and `caption` (a string or a list of strings).
2. `decoding`: `SampleDecoder` decodes one row (`decode_image`), resizes it to a fixed base size as uint8
   (3, S, S) (`resize_center_crop`) and draws one caption (`select_caption`); every failure is a
   `BadSampleError` naming one of `BAD_SAMPLE_REASONS`.
3. `image_text`: `ImageTextDataset` (map-style) or `IterableImageTextDataset` (streaming) apply the
   bad-sample policy: bad samples are counted by reason and skipped, or raise, according to
   `on_bad_sample`; the counts travel with the samples so they survive DataLoader worker processes.
4. `collator`: `MCDCollator` stacks the images, tokenizes the captions and makes the MLM-masked copy of
   the ids with transformers' `DataCollatorForLanguageModeling`.

Under `MCDTrainer`, `KeyedSamples` and `SeededCollator` make each batch's MLM mask a function of its
samples, so a resumed run masks exactly like an uninterrupted one. Random crops and augmentations happen
later, batched on the accelerator (`augmentation.py`).
"""

from .collator import MCDCollator, SeededCollator
from .decoding import (
    BAD_SAMPLE_REASONS,
    DEFAULT_MAX_CONSECUTIVE_BAD,
    DEFAULT_MAX_PIXELS,
    ON_BAD_SAMPLE_CHOICES,
    BadSampleCounter,
    BadSampleError,
    SampleDecoder,
    decode_image,
    resize_center_crop,
    select_caption,
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
from .sources import (
    LOCAL_EXTENSIONS,
    WEBDATASET_CAPTION_KEYS,
    WEBDATASET_IMAGE_KEYS,
    expand_braces,
    load_image_text_dataset,
)

__all__ = [
    "BAD_SAMPLE_REASONS",
    "DEFAULT_MAX_CONSECUTIVE_BAD",
    "DEFAULT_MAX_PIXELS",
    "LOCAL_EXTENSIONS",
    "ON_BAD_SAMPLE_CHOICES",
    "SAMPLE_KEY",
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
    "decode_image",
    "expand_braces",
    "image_text_dataset",
    "load_image_text_dataset",
    "resize_center_crop",
    "select_caption",
    "validate_caption",
]
