# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Training samples from an image-text dataset: the map-style and streaming datasets, and their seeding key.

Data flow: the rows of `sources.load_image_text_dataset` -> `ImageTextDataset` (map-style) or
`IterableImageTextDataset` (streaming) -> samples `{"pixel_values": uint8 (3, S, S), "caption": str,
"skipped": {reason: count}}` -> `collator.MCDCollator`. Both datasets turn a row into a sample with the same
`decoding.SampleDecoder`; they differ only in how they walk their rows and where a skipped row's count rides.
The counts travel inside the samples so they survive DataLoader worker processes.

`KeyedSamples` adds each sample's `(epoch, index)` under `SAMPLE_KEY`, which `collator.SeededCollator` turns
into the seed of that batch's MLM mask (so a resumed run masks exactly like the uninterrupted one).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import datasets
import torch
from transformers.utils import logging

from .decoding import DEFAULT_MAX_CONSECUTIVE_BAD, DEFAULT_MAX_PIXELS, BadSampleError, SampleDecoder
from .sources import lazy_images

logger = logging.get_logger(__name__)

# Sample field carrying (epoch, index) from `KeyedSamples` to `SeededCollator`; never reaches the model.
SAMPLE_KEY = "_mcd_sample_key"


class _DecodedRows:
    """The constructor the two datasets share: a `SampleDecoder` for their rows, and the epoch.

    Subclasses say how they hold their rows (`_hold`).
    """

    def __init__(
        self,
        rows: Any,
        image_size: int,
        on_bad_sample: str = "skip",
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        seed: int = 0,
        max_consecutive_bad: int = DEFAULT_MAX_CONSECUTIVE_BAD,
    ):
        self.decoder = SampleDecoder(image_size, on_bad_sample, max_pixels, seed, max_consecutive_bad)
        self.epoch = 0
        self._hold(rows)

    def _hold(self, rows: Any) -> None:
        raise NotImplementedError


class ImageTextDataset(_DecodedRows, torch.utils.data.Dataset):
    r"""
    Map-style training samples from an image-text dataset, with the bad-sample policy.

    `dataset[i]` is `{"pixel_values": uint8 (3, S, S), "caption": str, "skipped": {reason: count}}`.
    When row `i` is bad and `on_bad_sample="skip"`, its reason is counted and logged at debug level
    and the next good row (i+1, i+2, ..., wrapping) is returned instead, so every batch keeps its size
    (a global batch split across processes needs equal shapes). Only row `i`'s own reason is counted:
    a bad row met while looking ahead is counted when it is itself requested, so one pass over the
    indices counts each bad row once. The counts ride in `skipped` so they survive DataLoader workers.

    Args:
        rows (`datasets.Dataset` or a sequence of dicts): rows with `image` and `caption`, as made by
            `load_image_text_dataset`. `Image` columns are cast to `decode=False` (decoded here).
        image_size (`int`): the base side length S.
        on_bad_sample, max_pixels, seed, max_consecutive_bad: the bad-sample policy and the seed of the
            caption draw, documented in `SampleDecoder` (`"skip"`, `DEFAULT_MAX_PIXELS`, 0 and 100 by default).
    """

    def _hold(self, rows: datasets.Dataset | Sequence[Mapping[str, Any]]) -> None:
        if isinstance(rows, datasets.IterableDataset):
            raise TypeError("a streaming dataset has no random access: use IterableImageTextDataset")
        self.dataset = lazy_images(rows) if isinstance(rows, datasets.Dataset) else rows
        if len(self.dataset) == 0:
            raise ValueError("the dataset is empty")

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that seeds the caption draw (called by accelerate/Trainer between epochs)."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, Any]:
        size = len(self.dataset)
        tries = min(size, self.decoder.max_consecutive_bad + 1)
        reasons: Counter = Counter()  # every bad row met, for the error message
        for offset in range(tries):
            row_index = (index + offset) % size
            try:
                sample = self.decoder.make_sample(self.dataset[row_index], row_index, self.epoch, f"row {row_index}")
            except BadSampleError as error:
                if self.decoder.on_bad_sample == "raise":
                    raise
                logger.debug("skipping bad sample: %s", error)
                reasons[error.reason] += 1
                if offset == 0:
                    own_reason = error.reason
                continue
            # Count only the requested row: look-ahead rows are counted when they are requested.
            sample["skipped"] = {own_reason: 1} if offset else {}
            return sample
        raise self.decoder.too_many_bad(tries, f"row {index}", reasons)


class IterableImageTextDataset(_DecodedRows, torch.utils.data.IterableDataset):
    r"""
    The streaming twin of `ImageTextDataset`, for `datasets.IterableDataset` sources (webdataset shards,
    streamed Hub datasets). Same samples and the same policy; a skipped sample is simply not yielded,
    and its reason rides in the `skipped` dict of the next sample yielded.

    Worker sharding is the source's job: a `datasets.IterableDataset` splits its shards across
    DataLoader workers by itself. The caption draw uses the position in this worker's stream as index.

    Args:
        rows (`datasets.IterableDataset` or any iterable of dicts): rows with `image` and `caption`.
        image_size (`int`): the base side length S.
        on_bad_sample, max_pixels, seed, max_consecutive_bad: the bad-sample policy and the seed of the
            caption draw, documented in `SampleDecoder` (`"skip"`, `DEFAULT_MAX_PIXELS`, 0 and 100 by default).
    """

    def _hold(self, rows: datasets.IterableDataset | Iterable[Mapping[str, Any]]) -> None:
        self.source = lazy_images(rows) if isinstance(rows, datasets.IterableDataset) else rows

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
                sample = self.decoder.make_sample(row, position, self.epoch, f"sample {position} of the stream")
            except BadSampleError as error:
                if self.decoder.on_bad_sample == "raise":
                    raise
                logger.debug("skipping bad sample: %s", error)
                skipped[error.reason] += 1
                in_a_row += 1
                if in_a_row >= self.decoder.max_consecutive_bad:
                    where = f"sample {position - in_a_row + 1}"
                    raise self.decoder.too_many_bad(in_a_row, where, skipped) from error
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


class KeyedSamples(torch.utils.data.Dataset):
    """A map-style dataset whose samples also carry `(epoch, index)` under `SAMPLE_KEY`: the key that
    `SeededCollator` turns into the seed of their batch's MLM mask."""

    def __init__(self, dataset: torch.utils.data.Dataset):
        self.dataset = dataset
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        # Called by accelerate's dataloader before each epoch; the wrapped dataset may seed captions with it too.
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.dataset[index]
        if not isinstance(sample, Mapping):
            raise TypeError(f"MCDTrainer expects dict samples, got a {type(sample).__name__} at index {index}")
        return {**sample, SAMPLE_KEY: (self.epoch, int(index))}


class KeyedStream(torch.utils.data.IterableDataset):
    """The streaming twin of `KeyedSamples`: each sample carries `(epoch, position)` under `SAMPLE_KEY`, its position
    counted over the whole stream (a DataLoader worker's k-th sample is the stream's k·W + w-th, with W workers), so
    a resumed run, which skips the batches it already trained on by reading them again, masks alike."""

    def __init__(self, dataset: torch.utils.data.IterableDataset):
        self.dataset = dataset
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = torch.utils.data.get_worker_info()
        workers, rank = (worker.num_workers, worker.id) if worker is not None else (1, 0)
        for position, sample in enumerate(self.dataset):
            if not isinstance(sample, Mapping):
                raise TypeError(f"MCDTrainer expects dict samples, got a {type(sample).__name__} at {position}")
            yield {**sample, SAMPLE_KEY: (self.epoch, position * workers + rank)}
