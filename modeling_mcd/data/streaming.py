# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Which rows of a stream each process and each DataLoader worker reads, in which order, epoch after epoch.

A stream (webdataset shards, a streamed Hub dataset, caption files read as a stream) is a list of shards. Every
epoch, every process draws the same permutation of the shards from (seed, epoch), so the processes agree on who
reads what without talking. Then the shards are dealt out as webdataset and `datasets.distributed.
split_dataset_by_node` deal them, at two levels:

- across the N processes: process r reads shards r, r + N, r + 2N, ... of the permutation when N divides the
  shard count; otherwise every process reads every shard and keeps 1 row of N (before decoding, so a sample is
  still decoded by one process only, but read by all);
- across the W DataLoader workers of a process: the same rule on that process's shards.

When the shards do not divide evenly, rows and not shards are dealt out: with endless epochs (training), a slot
holding fewer rows than the others would cycle through them faster and train on them more often. Which rows a slot
keeps depends on the row, never on the order (`(shard + position) % M == m`), so every row of an epoch goes to
exactly one slot. The rows a slot keeps go through a shuffle buffer seeded by (seed, epoch, process, worker).

Each row is known by its identity, `shard << 32 | position in the shard`: the same whatever the number of processes
and workers and whatever the order, so the caption drawn for it and its MLM mask are functions of (seed, epoch,
sample) (`image_text.IterableImageTextDataset`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np

from .seeding import derive_seed

#: `derive_seed` keys of the two draws, so that they never share a stream with each other or with other draws.
SHARD_ORDER_STREAM = 0x5348
BUFFER_STREAM = 0x4255
#: The bits of a row's position in its shard inside its identity.
POSITION_BITS = 32
DEFAULT_SHUFFLE_BUFFER_SIZE = 1000


@dataclass(frozen=True)
class StreamOrder:
    r"""
    How a stream is walked: its order, its epochs, and this process's part of it.

    Args:
        seed (`int`, *optional*, defaults to 0): the run's seed; with the epoch, it draws every order.
        shuffle_shards (`bool`, *optional*, defaults to `False`): a new permutation of the shards every epoch.
        shuffle_buffer_size (`int`, *optional*, defaults to 0): rows held in the shuffle buffer; 0 or 1: none.
        repeat (`bool`, *optional*, defaults to `False`): go on with the next epoch when one ends (training:
            transformers' Trainer runs a stream for `max_steps` and has no epochs of its own); one pass otherwise.
        process_index (`int`, *optional*, defaults to 0): this process among `num_processes`.
        num_processes (`int`, *optional*, defaults to 1): the processes sharing the stream (data parallel).
    """

    seed: int = 0
    shuffle_shards: bool = False
    shuffle_buffer_size: int = 0
    repeat: bool = False
    process_index: int = 0
    num_processes: int = 1

    def __post_init__(self):
        if self.shuffle_buffer_size < 0:
            raise ValueError(f"shuffle_buffer_size must be >= 0, got {self.shuffle_buffer_size}")
        if not 0 <= self.process_index < self.num_processes:
            raise ValueError(f"process_index {self.process_index} is not one of {self.num_processes} processes")

    @classmethod
    def for_training(
        cls, seed: int, shuffle_buffer_size: int, process_index: int = 0, num_processes: int = 1
    ) -> StreamOrder:
        """The order of a training stream: shards shuffled every epoch, the buffer, endless epochs."""
        return cls(seed, True, shuffle_buffer_size, True, process_index, num_processes)


@dataclass(frozen=True)
class SlotPlan:
    """What one slot (a worker of a process) reads in an epoch: `positions` in the epoch's shard permutation, and of
    their rows those with `(shard + position) % modulus == residue`."""

    positions: range
    modulus: int
    residue: int

    def keeps(self, shard: int, position: int) -> bool:
        return (shard + position) % self.modulus == self.residue

    @property
    def by_shards(self) -> bool:
        """Whether the slot reads only its own shards (no row of them goes to another slot)."""
        return self.modulus == 1


def plan_slot(shards: int, process_index: int, num_processes: int, worker: int, workers: int) -> SlotPlan:
    r"""
    The part of an epoch's shards that worker `worker` of process `process_index` reads (see the module docstring).

    Args:
        shards (`int`): the stream's shard count n.
        process_index, num_processes (`int`): this process r among N.
        worker, workers (`int`): this DataLoader worker w among W (0 of 1 without workers).

    Returns:
        `SlotPlan`: positions `r, r + N, ...` when N divides n (else all n and 1 row of N), then of those L positions,
        `w, w + W, ...` when W divides L (else all L and 1 row of W of the process's rows).
    """
    if num_processes <= 0 or workers <= 0:
        raise ValueError(f"{num_processes} processes and {workers} workers: both must be positive")
    if shards % num_processes == 0:
        positions, modulus, residue = range(process_index, shards, num_processes), 1, 0
    else:
        positions, modulus, residue = range(shards), num_processes, process_index
    if len(positions) % workers == 0:
        return SlotPlan(positions[worker::workers], modulus, residue)
    # Rows of every worker: residues r + N·w of N·W (they are the process's residue r of N, and cover it once).
    return SlotPlan(positions, modulus * workers, residue + modulus * worker)


def shard_permutation(shards: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The shard order of `epoch`: the same on every process (drawn from the run's seed and the epoch only)."""
    if not shuffle or shards == 1:
        return np.arange(shards)
    return np.random.default_rng(derive_seed(seed, epoch, SHARD_ORDER_STREAM)).permutation(shards)


def shuffle_buffer(items: Iterable[Any], size: int, rng: np.random.Generator) -> Iterator[Any]:
    """`items` through a buffer of `size`: each new item takes the place of a random one, which is yielded; the rest
    are yielded in random order at the end (webdataset's `shuffle`). `size` <= 1 keeps the order."""
    if size <= 1:
        yield from items
        return
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        slot = int(rng.integers(size))
        yield buffer[slot]
        buffer[slot] = item
    for slot in rng.permutation(len(buffer)):
        yield buffer[slot]


class SourceShards:
    r"""
    The shards of a stream, each readable on its own in any process or DataLoader worker.

    A `datasets.IterableDataset` has `num_shards` shards (a webdataset's tar files, a Hub dataset's files); shard `i`
    is `source.shard(num_shards, i)`, read with `.iter(batch_size=1)`, which leaves the worker split to us (plain
    iteration inside a DataLoader worker would split the one shard across the workers again). Any other iterable of
    rows is one shard.

    Args:
        source (`datasets.IterableDataset` or an iterable of row dicts): the stream.
    """

    def __init__(self, source: datasets.IterableDataset | Iterable[Mapping[str, Any]]):
        self.source = source
        self.count = source.num_shards if isinstance(source, datasets.IterableDataset) else 1

    def __len__(self) -> int:
        return self.count

    def rows(self, index: int) -> Iterator[Mapping[str, Any]]:
        """The rows of shard `index`, in its order."""
        if not isinstance(self.source, datasets.IterableDataset):
            yield from self.source
            return
        # Building one shard's dataset splits the source's shard list (O(shards)): negligible next to reading it.
        shard = self.source
        if self.count > 1:
            shard = shard.shard(num_shards=self.count, index=index, contiguous=True)
        for batch in shard.iter(batch_size=1):
            yield {name: values[0] for name, values in batch.items()}

    def describe(self, indices: Iterable[int]) -> str:
        """The shards as a user knows them (their files when the source says), for messages."""
        files = _shard_files(self.source)
        named = [files[i] if files and i < len(files) else f"shard {i}" for i in indices]
        return ", ".join(named[:5]) + (f" and {len(named) - 5} more" if len(named) > 5 else "")


def _shard_files(source: Any) -> list[str] | None:
    """The files of a webdataset/packaged stream, one per shard, when `datasets` holds them as gen_kwargs."""
    examples = getattr(source, "_ex_iterable", None)
    while examples is not None and not isinstance(getattr(examples, "kwargs", None), Mapping):
        examples = getattr(examples, "ex_iterable", None)  # mapped, filtered, ... streams wrap the base one
    kwargs = getattr(examples, "kwargs", None)
    if isinstance(kwargs, Mapping):
        for value in kwargs.values():
            if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
                return value
    return None


@dataclass
class EpochCount:
    """What one slot did in one epoch: rows read from its shards, kept as its own, and decoded."""

    read: int = 0
    kept: int = 0
    decoded: int = 0


def slot_rows(
    shards: SourceShards, order: StreamOrder, epoch: int, worker: int, workers: int, count: EpochCount
) -> Iterator[tuple[int, Mapping[str, Any]]]:
    r"""
    `(identity, row)` for the rows of one epoch that belong to this slot, in the epoch's order.

    Args:
        shards (`SourceShards`): the stream.
        order (`StreamOrder`): seed, shuffling and this process's place.
        epoch (`int`): the epoch, which draws the shard permutation and seeds the buffer.
        worker, workers (`int`): this DataLoader worker among the process's.
        count (`EpochCount`): updated with the rows read and kept.
    """
    plan = plan_slot(len(shards), order.process_index, order.num_processes, worker, workers)
    permutation = shard_permutation(len(shards), order.seed, epoch, order.shuffle_shards)

    def own_rows() -> Iterator[tuple[int, Mapping[str, Any]]]:
        for shard in (int(permutation[position]) for position in plan.positions):
            for position, row in enumerate(shards.rows(shard)):
                count.read += 1
                if plan.keeps(shard, position):
                    count.kept += 1
                    yield (shard << POSITION_BITS) | position, row

    rng = np.random.default_rng(derive_seed(order.seed, epoch, order.process_index, worker, BUFFER_STREAM))
    yield from shuffle_buffer(own_rows(), order.shuffle_buffer_size, rng)


def keep_process_share(dataloader: Any) -> Any:
    r"""
    Let a prepared DataLoader hand this process every batch of a stream that is already this process's share.

    accelerate (with `dispatch_batches=False`) wraps an iterable dataset in `IterableDatasetShard`, which reads the
    whole stream on every process and keeps 1 batch of N. A stream split across processes here (`StreamOrder`
    with `num_processes` > 1) would lose (N - 1)/N of its share that way: the wrapper is made a pass-through (one
    process), as transformers' Trainer does with accelerate's batch sampler for its rank-aware sampler.

    Args:
        dataloader: the Trainer's prepared training DataLoader.

    Returns:
        The same DataLoader.

    Raises:
        ValueError: accelerate dispatches the batches (`dispatch_batches=True`): the main process would read only
            its own share and send it to every process.
    """
    from accelerate.data_loader import DataLoaderDispatcher, IterableDatasetShard

    # `type`, not `isinstance`: accelerate's loaders claim to be the torch DataLoader they wrap.
    if issubclass(type(dataloader), DataLoaderDispatcher) and splits_across_processes(dataloader.dataset):
        raise ValueError(
            "a stream split across processes needs accelerate's dispatch_batches=False: with dispatching, the main "
            "process reads only its share and sends it to every process"
        )
    wrapper = getattr(dataloader, "dataset", None)
    if isinstance(wrapper, IterableDatasetShard) and splits_across_processes(wrapper.dataset):
        wrapper.num_processes, wrapper.process_index = 1, 0
    return dataloader


def splits_across_processes(dataset: Any) -> bool:
    """Whether `dataset` (or the dataset it wraps) already reads only this process's share of its stream."""
    while dataset is not None:
        order = getattr(dataset, "order", None)
        if isinstance(order, StreamOrder):
            return order.num_processes > 1
        dataset = getattr(dataset, "dataset", None)
    return False


__all__ = [
    "DEFAULT_SHUFFLE_BUFFER_SIZE",
    "EpochCount",
    "SlotPlan",
    "SourceShards",
    "StreamOrder",
    "keep_process_share",
    "plan_slot",
    "shard_permutation",
    "shuffle_buffer",
    "slot_rows",
    "splits_across_processes",
]
