# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Training samples from an image-text dataset: the map-style and streaming datasets, and their seeding key.

Data flow: the rows of `sources.load_image_text_dataset` -> `ImageTextDataset` (map-style) or
`IterableImageTextDataset` (streaming) -> samples `{"pixel_values": uint8 (3, S, S), "caption": str, "pair_id": int,
"skipped": {reason: [record, ...]}}` -> `collator.MCDCollator`. Both datasets turn a row into a sample with the same
`decoding.SampleDecoder`; they differ only in how they walk their rows and where a skipped row's record rides. The
records (`skipped.SkippedRow.as_dict()`) travel inside the samples so they survive DataLoader worker processes.

A skipped row never puts a pair twice into a batch. Rows known to be bad before training (a caption file's bad
rows, `text_files`) are left out of the epoch's index; a row found bad only when decoded becomes a placeholder
(a blank image, an empty caption, pair id `pairs.PADDING_PAIR_ID`) that no loss term sees.

`KeyedSamples` adds each sample's `(epoch, index)` under `SAMPLE_KEY`, which `collator.SeededCollator` turns
into the seed of that batch's MLM mask (so a resumed run masks exactly like the uninterrupted one); a streamed
sample brings `(epoch, identity)` itself (`streaming`: which process and worker reads which rows, in which order).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import datasets
import numpy as np
import torch
from transformers.utils import logging

from ..objective.pairs import PADDING_PAIR_ID
from .decoding import DEFAULT_MAX_CONSECUTIVE_BAD, DEFAULT_MAX_PIXELS, BadSampleError, SampleDecoder
from .skipped import SkippedRow, describe_counts, log_skipped_row
from .sources import lazy_images
from .streaming import (
    POSITION_BITS,
    EpochCount,
    SourceShards,
    StreamOrder,
    plan_slot,
    shard_permutation,
    slot_rows,
)

logger = logging.get_logger(__name__)

# Sample field carrying (epoch, index) from `KeyedSamples` to `SeededCollator`; never reaches the model.
SAMPLE_KEY = "_mcd_sample_key"
_POSITION_MASK = (1 << POSITION_BITS) - 1


class _DecodedRows:
    """What the two datasets share: a `SampleDecoder` for their rows, the epoch, and the bad-sample policy.

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
        self._logged = 0  # rows found bad while decoding, logged one by one so far (`skipped.LOGGED_ROWS`)
        #: Rows left out before training (a caption file's bad rows); the rows found bad later ride in the samples.
        self.skipped_rows: list[SkippedRow] = []
        #: Called with each row's image before it is decoded (`leakage.StreamLeakGuard`); raises on an eval image.
        self.leak_guard: Callable[[Any], None] | None = None
        self._hold(rows)

    def _hold(self, rows: Any) -> None:
        raise NotImplementedError

    def _decode(
        self, row: Mapping[str, Any], index: int, key: int | None = None, epoch: int | None = None
    ) -> dict[str, Any] | SkippedRow:
        """Row `index` as a sample, its caption drawn from (seed, `epoch`, `key`) (default: this epoch, `index`);
        when it is bad, its record under `"skip"` (logged), or the error under `"raise"` (naming the file and line,
        or the row, the column and the reason)."""
        if self.leak_guard is not None:
            self.leak_guard(row.get("image"))
        try:
            if row.get("bad_reason"):  # a caption file's row, found bad while reading the file
                raise _recorded_problem(row)
            key, epoch = index if key is None else key, self.epoch if epoch is None else epoch
            sample = self.decoder.make_sample(row, key, epoch)
        except BadSampleError as error:
            record = SkippedRow.from_error(error, row, index)
            if self.decoder.on_bad_sample == "raise":
                raise record.error() from error
            log_skipped_row(record, self._logged)
            self._logged += 1
            return record
        if "pair_id" in row:
            sample["pair_id"] = int(row["pair_id"])
        return sample


def _recorded_problem(row: Mapping[str, Any]) -> BadSampleError:
    """The problem `text_files` recorded in a caption file's row."""
    return BadSampleError(row["bad_reason"], row["bad_detail"], row["bad_column"])


def known_bad(rows: datasets.Dataset | Sequence[Mapping[str, Any]]) -> np.ndarray:
    """(N,) bool: the rows known to be bad before decoding (a caption file's `bad_reason`); all `False` without it."""
    if not isinstance(rows, datasets.Dataset) or "bad_reason" not in rows.column_names:
        return np.zeros(len(rows), dtype=bool)
    return np.array([reason is not None for reason in rows["bad_reason"]], dtype=bool)


def _usable_rows(rows: datasets.Dataset | Sequence[Mapping[str, Any]]) -> tuple[Sequence[int], list[SkippedRow]]:
    """The indices of the rows not known to be bad, and the records of those that are (a caption file's)."""
    is_bad = known_bad(rows)
    if not is_bad.any():
        return range(len(rows)), []
    usable, bad = np.flatnonzero(~is_bad), np.flatnonzero(is_bad).tolist()
    records = [
        SkippedRow.from_error(_recorded_problem(row), row, index)
        for index, row in zip(bad, rows.select(bad).remove_columns(["image", "caption"]))
    ]
    return usable, records


class ImageTextDataset(_DecodedRows, torch.utils.data.Dataset):
    r"""
    Map-style training samples from an image-text dataset, with the bad-sample policy.

    `dataset[i]` is `{"pixel_values": uint8 (3, S, S), "caption": str, "pair_id": int, "skipped": {reason:
    [record]}}` for the i-th usable row. `pair_id` is the row's `pair_id` column when it has one (a caption file:
    the first row naming the same image), else its row index: the loss never uses two samples of one pair as
    negatives of each other.

    Rows known to be bad (a caption file's, see `text_files`) are not part of the index at all: under `"skip"`
    they are logged, and listed in `skipped_rows`; under `"raise"` the first one raises here, naming its file,
    line, column and reason. A row found bad only when decoded (a corrupt image) is counted, logged, and returned
    as a placeholder (a blank image, an empty caption, pair id `PADDING_PAIR_ID`) so that every batch keeps its
    size (a global batch split across processes needs equal shapes) while no term of the loss sees it: every good
    row trains exactly once per epoch. Its record rides in `skipped`, so it survives DataLoader workers.

    Args:
        rows (`datasets.Dataset` or a sequence of dicts): rows with `image` and `caption`, as made by
            `load_image_text_dataset`. `Image` columns are cast to `decode=False` (decoded here).
        image_size (`int`): the base side length S.
        on_bad_sample, max_pixels, seed, max_consecutive_bad: the bad-sample policy and the seed of the
            caption draw, documented in `SampleDecoder` (`"skip"`, `DEFAULT_MAX_PIXELS`, 0 and 100 by default).
            `max_consecutive_bad` requests in a row that are bad raise `RuntimeError`: the source looks broken.

    Raises:
        BadSampleError: under `"raise"`, at the first bad row of a caption file.
        ValueError: no row can be used.
    """

    def _hold(self, rows: datasets.Dataset | Sequence[Mapping[str, Any]]) -> None:
        if isinstance(rows, datasets.IterableDataset):
            raise TypeError("a streaming dataset has no random access: use IterableImageTextDataset")
        self.dataset = lazy_images(rows) if isinstance(rows, datasets.Dataset) else rows
        if len(self.dataset) == 0:
            raise ValueError("the dataset is empty")
        self.indices, self.skipped_rows = _usable_rows(self.dataset)
        if self.skipped_rows:
            if self.decoder.on_bad_sample == "raise":
                raise self.skipped_rows[0].error()
            reasons = describe_counts(record.reason for record in self.skipped_rows)
            if len(self.indices) == 0:
                raise ValueError(f"none of the {len(self.dataset)} rows can be used ({reasons})")
            logger.warning(
                "%d of %d rows cannot be used and are left out (%s)", len(self.skipped_rows), len(self.dataset), reasons
            )
            for logged, record in enumerate(self.skipped_rows):
                log_skipped_row(record, logged)
        self._bad_in_a_row: Counter = Counter()  # reasons of the bad rows requested since the last good one

    def __len__(self) -> int:
        return len(self.indices)

    def training_images(self) -> Sequence[Any]:
        """The undecoded image of every usable row (paths, `{"bytes", "path"}` dicts, ...), in index order."""
        if isinstance(self.dataset, datasets.Dataset):
            return self.dataset.select(self.indices)["image"]
        return [self.dataset[int(i)]["image"] for i in self.indices]

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that seeds the caption draw (called by accelerate/Trainer between epochs)."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, Any]:
        row_index = int(self.indices[index])
        sample = self._decode(self.dataset[row_index], row_index)
        if isinstance(sample, dict):
            self._bad_in_a_row.clear()
            sample.setdefault("pair_id", row_index)
            return {**sample, "skipped": {}}
        self._bad_in_a_row[sample.reason] += 1
        count = sum(self._bad_in_a_row.values())
        if count >= self.decoder.max_consecutive_bad:
            raise self.decoder.too_many_bad(count, f"up to {sample.where()}", self._bad_in_a_row)
        size = self.decoder.image_size
        return {
            "pixel_values": torch.zeros(3, size, size, dtype=torch.uint8),
            "caption": "",
            "pair_id": PADDING_PAIR_ID,
            "skipped": {sample.reason: [sample.as_dict()]},
        }


class IterableImageTextDataset(_DecodedRows, torch.utils.data.IterableDataset):
    r"""
    The streaming twin of `ImageTextDataset`, for `datasets.IterableDataset` sources (webdataset shards,
    streamed Hub datasets or caption files). Same samples and the same policy; a skipped row is simply not
    yielded (a stream has no fixed index to keep), and its record rides in the `skipped` dict of the next sample
    yielded; a row known to be bad before decoding (a caption file's, a cut shard's) rides with the sample before
    it, so that one after the last sample is counted too. Samples carry a `pair_id` only when the rows have one
    (caption files).

    Which rows this process and this DataLoader worker read, in which order and for how many epochs, is `order`'s
    (`streaming.StreamOrder`; by default one pass in the source's order): with `num_processes` > 1 each process reads
    its own share of the shards, so each sample is decoded once per epoch in the whole job. Every sample carries
    `SAMPLE_KEY` = (epoch, identity), its identity being its shard and its position there: its caption draw and its
    MLM mask do not depend on the order, the processes or the workers, and a resumed run, which replays the stream,
    draws them alike.

    Args:
        rows (`datasets.IterableDataset` or any re-iterable of dicts): rows with `image` and `caption`.
        image_size (`int`): the base side length S.
        on_bad_sample, max_pixels, seed, max_consecutive_bad: the bad-sample policy and the seed of the
            caption draw, documented in `SampleDecoder` (`"skip"`, `DEFAULT_MAX_PIXELS`, 0 and 100 by default).
        order (`streaming.StreamOrder`, *optional*): the walk of the stream; its seed is `seed`'s when not given.

    Attributes:
        epoch_counts (`list[streaming.EpochCount]`): rows read, kept and decoded in each epoch by this process when
            it iterates without DataLoader workers (the workers log theirs at the end of each epoch).
    """

    def __init__(self, rows: Any, image_size: int, *args: Any, order: StreamOrder | None = None, **kwargs: Any):
        super().__init__(rows, image_size, *args, **kwargs)
        self.order = order if order is not None else StreamOrder(seed=self.decoder.seed)
        self.epoch_counts: list[EpochCount] = []

    def _hold(self, rows: datasets.IterableDataset | Iterable[Mapping[str, Any]]) -> None:
        self.source = lazy_images(rows) if isinstance(rows, datasets.IterableDataset) else rows
        self.shards = SourceShards(self.source)

    def set_epoch(self, epoch: int) -> None:
        """Set the first epoch of the next pass (its shard order, buffer, caption draws and masks)."""
        self.epoch = epoch
        if not isinstance(self.source, datasets.IterableDataset) and hasattr(self.source, "set_epoch"):
            self.source.set_epoch(epoch)  # a source that orders itself; a `datasets` one is ordered here

    def _epoch_rows(self) -> Iterator[tuple[int, int, int, Mapping[str, Any]]]:
        """`(epoch, identity, position, row)` of this slot, epoch after epoch when the order repeats."""
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch = self.epoch
        while True:
            count = EpochCount()
            for identity, row in slot_rows(self.shards, self.order, epoch, worker, workers, count):
                count.decoded += not row.get("bad_reason")
                yield epoch, identity, identity & _POSITION_MASK, row
            self._end_epoch(epoch, count, worker, workers, info is None)
            if not self.order.repeat:
                return
            epoch += 1

    def _end_epoch(self, epoch: int, count: EpochCount, worker: int, workers: int, in_process: bool) -> None:
        order = self.order
        where = f"process {order.process_index} of {order.num_processes}, worker {worker} of {workers}"
        if in_process:
            self.epoch_counts.append(count)
        logger.info(
            "stream epoch %d, %s: read %d rows, kept %d, decoded %d",
            epoch, where, count.read, count.kept, count.decoded,
        )  # fmt: skip
        if order.repeat and count.kept == 0:
            plan = plan_slot(len(self.shards), order.process_index, order.num_processes, worker, workers)
            shards = shard_permutation(len(self.shards), order.seed, epoch, order.shuffle_shards)[plan.positions]
            share = self.shards.describe(shards) + ("" if plan.by_shards else f", 1 row of {plan.modulus}")
            raise ValueError(
                f"{where} has no row of the stream in epoch {epoch} (its share: {share}): it would wait for data "
                "forever. Use fewer processes or DataLoader workers, or more shards"
            )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        skipped: dict[str, list[dict[str, Any]]] = {}  # records since the last sample yielded
        in_a_row: Counter = Counter()
        rows = self._epoch_rows()
        following = None  # a row read after a sample to see whether it is known bad, not yet decoded
        while (item := following or next(rows, None)) is not None:
            following = None
            epoch, identity, position, row = item
            sample = self._decode(row, position, identity, epoch)
            if isinstance(sample, SkippedRow):
                self._count(sample, skipped, in_a_row)
                continue
            sample["skipped"], skipped, in_a_row = skipped, {}, Counter()
            sample[SAMPLE_KEY] = (epoch, identity)
            # The rows known to be bad before decoding (a caption file's, a cut shard's) that follow ride with this
            # sample: those after the stream's last sample are counted too. The first other row waits its turn.
            for following in rows:
                if not following[3].get("bad_reason"):
                    break
                self._count(self._decode(following[3], following[2]), sample["skipped"], in_a_row)
            else:
                following = None
            yield sample
        if skipped:
            logger.warning("the stream ended with %d skipped rows after its last sample", sum(in_a_row.values()))

    def _count(self, record: SkippedRow, skipped: dict[str, list], in_a_row: Counter) -> None:
        """Add a skipped row's record; raise when too many rows in a row are bad."""
        skipped.setdefault(record.reason, []).append(record.as_dict())
        in_a_row[record.reason] += 1
        if sum(in_a_row.values()) >= self.decoder.max_consecutive_bad:
            raise self.decoder.too_many_bad(sum(in_a_row.values()), f"up to {record.where()}", in_a_row)


def image_text_dataset(
    dataset: datasets.Dataset | datasets.IterableDataset, image_size: int, order: StreamOrder | None = None, **kwargs
) -> ImageTextDataset | IterableImageTextDataset:
    """Wrap `dataset` in `ImageTextDataset` or, when it streams, in `IterableImageTextDataset`.

    Args:
        dataset: the output of `load_image_text_dataset`.
        image_size: the base side length S.
        order (`streaming.StreamOrder`, *optional*): how a stream is walked (shuffling, epochs, this process's
            share); a map-style dataset is ordered by the Trainer's sampler and ignores it.
        kwargs: `on_bad_sample`, `max_pixels`, `seed`, `max_consecutive_bad`.
    """
    if isinstance(dataset, (datasets.IterableDataset, torch.utils.data.IterableDataset)):
        return IterableImageTextDataset(dataset, image_size, order=order, **kwargs)
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
    """The streaming twin of `KeyedSamples`: each sample carries `(epoch, key)` under `SAMPLE_KEY`, so a resumed run,
    which skips the batches it already trained on by reading them again, masks alike. A sample that brings its own
    key keeps it (`IterableImageTextDataset`: its shard and position, whatever the processes and workers); others
    are keyed by their position over the whole stream (a DataLoader worker's k-th sample is the stream's k·W + w-th,
    with W workers)."""

    def __init__(self, dataset: torch.utils.data.IterableDataset):
        self.dataset = dataset
        self.epoch = 0

    @property
    def order(self) -> StreamOrder | None:
        """The wrapped stream's order (`streaming.keep_process_share` reads it)."""
        return getattr(self.dataset, "order", None)

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
            yield {SAMPLE_KEY: (self.epoch, position * workers + rank), **sample}
