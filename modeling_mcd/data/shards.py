# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Webdataset `.tar` shards read so that a shard cut short costs its own rest, not the run.

`datasets`' webdataset builder stops the whole load with `tarfile.ReadError` at the first cut shard (a copy that
died mid-way, a disk that filled up), and a shard cut between two members ends without a word. `TolerantWebDataset`
is that builder reading its shards through `ShardMembers`: the members of one shard, handed out a whole sample at a
time, which stops where the shard is cut and says where (`problem`). The builder then yields one more row for that
shard, with the problem in its `PROBLEM_COLUMN` (and every other column empty), and goes on with the next shard.
`sources` turns that row into a bad row (`truncated_shard`, the shard as its file): the datasets of `image_text`
leave it out, name it, count it and save it like any other skipped row, in map-style and streaming alike, and a
cached map-style load keeps it. A text member that is not UTF-8 (which stopped the whole load too) is decoded with
U+FFFD in place of its bad bytes; `sources` makes its row a `bad_encoding` one.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from itertools import islice
from typing import Any

import datasets
import pyarrow as pa
from datasets.builder import Key
from datasets.features.features import cast_to_python_objects
from datasets.packaged_modules.webdataset.webdataset import WebDataset, base_plus_ext
from transformers.utils import logging

logger = logging.get_logger(__name__)

#: The column of a shard's problem, on the one extra row a cut shard gives; `None` on every sample.
PROBLEM_COLUMN = "__mcd_shard_problem__"
# Part of the cache name: the rows differ from those of `datasets`' own builder.
_CACHE_HASH = "mcd-tolerant-webdataset-2"
#: Samples whose members make the columns (`datasets` looks at 5, and requires them all alike).
FEATURE_INFERENCE_SAMPLES = 50


class _EndAwareTarInfo(tarfile.TarInfo):
    """Remembers on its archive why reading stopped: `tarfile` takes a zero block (the real end), no bytes at all
    and half a header alike as the end of the archive."""

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tar)
        except tarfile.HeaderError as error:
            tar._mcd_end = error
            raise


def _ending(tar: tarfile.TarFile) -> str | None:
    """Why the archive `tar` ended, when it is not tar's end-of-archive block, or `None`."""
    end = getattr(tar, "_mcd_end", None)
    kind = type(end).__name__
    if kind == "EOFHeaderError":
        return None
    if kind == "EmptyHeaderError":
        return "ends between two members, without tar's end-of-archive block (cut short?)"
    return f"ends in a broken header ({end or 'unknown'})"


class ShardMembers:
    r"""
    The `(name, file object)` members of one tar shard, as `datasets`' `iter_archive` gives them, a whole sample at
    a time (every member of one key), re-iterable. Where the shard is cut, iteration stops and `problem` says where;
    the sample being read there is dropped (its members are not all whole).

    Args:
        path (`str`): the shard.

    Attributes:
        problem (`str` or `None`): after an iteration, what cut it short; `None` for a whole shard.
    """

    def __init__(self, path: str):
        self.path = path
        self.problem: str | None = None

    def __iter__(self) -> Iterator[tuple[str, io.BytesIO]]:
        self.problem = None
        held: list[tuple[str, bytes]] = []  # the members of the sample being read
        samples, reading, last = 0, None, None  # whole samples handed out; the member being read; the last one read
        try:
            with open(self.path, "rb") as f, tarfile.open(fileobj=f, mode="r|", tarinfo=_EndAwareTarInfo) as tar:
                for member in tar:
                    if not member.isreg() or os.path.basename(member.name).startswith((".", "__")):
                        continue  # what datasets' iter_archive leaves out too
                    if held and base_plus_ext(held[0][0])[0] != base_plus_ext(member.name)[0]:
                        # A new key: the sample held is whole, whatever happens to this one.
                        yield from ((name, io.BytesIO(value)) for name, value in held)
                        samples, held = samples + 1, []
                    reading = member.name
                    data = tar.extractfile(member).read()
                    if len(data) != member.size:
                        raise tarfile.ReadError("unexpected end of data")
                    reading, last = None, member.name
                    tar.members = []  # a stream keeps every header otherwise
                    held.append((member.name, data))
                ending = _ending(tar)
        except (tarfile.TarError, OSError, EOFError) as error:
            where = f"inside member {reading}" if reading else f"after member {last}" if last else "in its first header"
            self.problem = f"the shard is cut {where}, after {_samples(samples)} ({error}); the rest of it is skipped"
            return
        yield from ((name, io.BytesIO(value)) for name, value in held)
        if ending is not None:
            samples += bool(held)
            self.problem = f"the shard {ending}, after {_samples(samples)}; its last sample may be incomplete"


def _samples(count: int) -> str:
    return f"{count} sample" + ("" if count == 1 else "s")


class _Archives:
    """A download manager whose `iter_archive` gives `ShardMembers`; `only` narrows `download` to one shard."""

    def __init__(self, manager: Any, only: str | None = None):
        self.manager, self.only = manager, only

    def download(self, files: Any) -> Any:
        files = self.manager.download(files)
        return {split: [self.only] for split in files} if self.only is not None else files

    def iter_archive(self, path: str) -> ShardMembers:
        return ShardMembers(path)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.manager, name)


def _text(data: bytes) -> str:
    # datasets decodes strictly, and one caption that is not UTF-8 stopped the whole load; U+FFFD marks what could
    # not be decoded, and `sources` makes that row a bad one.
    return data.decode("utf-8", errors="replace")


class TolerantWebDataset(WebDataset):
    """`datasets`' webdataset builder, reading its shards with `ShardMembers` and giving a row for each cut shard
    (see the module docstring); text members that are not UTF-8 are decoded with U+FFFD for what is not."""

    DECODERS = {**WebDataset.DECODERS, "txt": _text, "text": _text, "transcript": _text}

    def _split_generators(self, dl_manager):
        if not self.info.features:
            files = [path for paths in dl_manager.download(self.config.data_files).values() for path in paths]
            self.info.features = self._infer_features(files)
        splits = super()._split_generators(_Archives(dl_manager))
        self.info.features[PROBLEM_COLUMN] = datasets.Value("string")
        return splits

    def _infer_features(self, files: list[str]) -> datasets.Features:
        """The columns: every member kind of the first samples (of the first shards that have any), typed as
        `datasets` types them. `datasets` requires its first 5 samples to hold the same members, so that one sample
        without its `.txt` stopped the whole load; here such a sample is a row without a caption, a bad row."""
        examples: list[dict[str, Any]] = []
        for path in files:
            wanted = FEATURE_INFERENCE_SAMPLES - len(examples)
            examples += islice(self._get_pipeline_from_tar(path, ShardMembers(path)), wanted)
            if len(examples) >= FEATURE_INFERENCE_SAMPLES:
                break
        if not examples:
            raise ValueError(f"no shard holds a whole sample: {files}")
        tables = [pa.Table.from_pylist(cast_to_python_objects([row], only_1d_for_numpy=True)) for row in examples]
        features = datasets.Features.from_arrow_schema(pa.concat_tables(tables, promote_options="default").schema)
        kinds = {
            datasets.Image: self.IMAGE_EXTENSIONS,
            datasets.Audio: self.AUDIO_EXTENSIONS,
            datasets.Video: self.VIDEO_EXTENSIONS,
            datasets.Mesh: self.MESH_EXTENSIONS,
        }
        for name in list(features):
            extension = name.rsplit(".", 1)[-1].lower()
            for kind, extensions in kinds.items():
                if extension in extensions:
                    features[name] = kind()
        return features

    def _generate_examples(self, tar_paths, tar_iterators):
        known, unknown = set(self.info.features), set()
        for index, (path, members) in enumerate(zip(tar_paths, tar_iterators)):
            count = 0
            for key, example in super()._generate_examples([path], [members]):
                count = key.item_or_batch_id + 1
                if extra := set(example) - known:  # a member kind the first samples did not show: no column for it
                    if extra - unknown:
                        logger.warning(
                            "%s: sample %s has members %s that the first samples of the shards lack; they are left "
                            "out (their samples may then miss their image or caption)", path, example["__key__"],
                            sorted(extra - unknown),
                        )  # fmt: skip
                        unknown |= extra
                    example = {name: value for name, value in example.items() if name in known}
                yield Key(index, key.item_or_batch_id), example
            if members.problem is not None:
                row = dict.fromkeys(self.info.features)
                row.update(__key__=f"{os.path.basename(path)}:cut", __url__=path, **{PROBLEM_COLUMN: members.problem})
                yield Key(index, count), row


def load_shards(files: list[str], split: str, streaming: bool, cache_dir: str | None = None, **kwargs):
    r"""
    Load webdataset shards as `datasets.load_dataset("webdataset", ...)` does, through `TolerantWebDataset`.

    Args:
        files (`list[str]`): the `.tar` shards, in order.
        split (`str`): the name of the split they make.
        streaming (`bool`): return a `datasets.IterableDataset`.
        cache_dir (`str`, *optional*): the `datasets` cache.
        kwargs: passed on to the builder (e.g. `storage_options`).

    Returns:
        `datasets.Dataset` or `datasets.IterableDataset` with the shards' columns, `__key__`, `__url__` and
        `PROBLEM_COLUMN`.
    """
    builder = TolerantWebDataset(
        cache_dir=cache_dir, dataset_name="webdataset", hash=_CACHE_HASH, data_files={split: files}, **kwargs
    )
    if streaming:
        return builder.as_streaming_dataset(split=split)
    builder.download_and_prepare()
    return builder.as_dataset(split=split)


__all__ = ["PROBLEM_COLUMN", "ShardMembers", "TolerantWebDataset", "load_shards"]
