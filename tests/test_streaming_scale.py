# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Streaming at cluster scale (`modeling_mcd.data.streaming`): shards reshuffled every epoch and a seeded shuffle
buffer (the same order for the same seed, another one each epoch), every sample of an epoch read by one process
and one DataLoader worker only, the same caption draw and MLM mask key however many processes read it, and two gloo
processes on uneven shards that both reach the last step."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tarfile
from collections import Counter
from itertools import islice

import numpy as np
import pytest
import torch
from accelerate.data_loader import DataLoaderDispatcher, IterableDatasetShard
from PIL import Image

from modeling_mcd.data import SAMPLE_KEY, IterableImageTextDataset, KeyedStream, load_image_text_dataset
from modeling_mcd.data.streaming import (
    StreamOrder,
    keep_process_share,
    plan_slot,
    shard_permutation,
    shuffle_buffer,
    splits_across_processes,
)

SIZE = 7


def write_shards(folder, sizes: list[int], first: int = 0) -> str:
    """Webdataset shards holding `sizes[i]` (png, txt) samples each; sample k's caption is `"photo k"`, its image a
    colour of its own. Returns the brace pattern naming them."""
    k = first
    for shard, size in enumerate(sizes):
        with tarfile.open(folder / f"s-{shard:03d}.tar", "w") as tar:
            for _ in range(size):
                buffer = io.BytesIO()
                Image.new("RGB", (9, 8), (k % 256, 7 * k % 256, 100)).save(buffer, "PNG")
                for suffix, data in (("png", buffer.getvalue()), ("txt", f"photo {k}".encode())):
                    info = tarfile.TarInfo(f"{k:06d}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                k += 1
    return str(folder / f"s-{{000..{len(sizes) - 1:03d}}}.tar")


@pytest.fixture
def stream(tmp_path):
    def make(sizes):
        pattern = write_shards(tmp_path, sizes)
        return load_image_text_dataset(pattern, streaming=True, cache_dir=str(tmp_path / "cache"))

    return make


def captions(dataset, count: int | None = None) -> list[str]:
    return [sample["caption"] for sample in islice(dataset, count)]


def test_the_order_is_the_seeds_and_the_epochs(stream):
    rows = stream([5, 5, 5, 5])
    order = StreamOrder.for_training(seed=3, shuffle_buffer_size=6)
    first = captions(IterableImageTextDataset(rows, SIZE, order=order), 40)  # two epochs of 20
    again = captions(IterableImageTextDataset(rows, SIZE, order=order), 40)
    other_seed = captions(IterableImageTextDataset(rows, SIZE, order=StreamOrder.for_training(4, 6)), 20)
    assert first == again  # a resumed run replays the same order
    assert sorted(first[:20]) == sorted(first[20:]) == sorted(f"photo {k}" for k in range(20))
    assert first[:20] != first[20:] and first[:20] != other_seed
    assert first[:20] != [f"photo {k}" for k in range(20)]  # not the tar order
    # The shard order alone changes between epochs; within a shard, the buffer mixes the rows.
    assert not np.array_equal(shard_permutation(50, 3, 0, True), shard_permutation(50, 3, 1, True))
    assert list(shard_permutation(4, 3, 0, False)) == [0, 1, 2, 3]
    in_order = captions(IterableImageTextDataset(rows, SIZE, order=StreamOrder(seed=3, shuffle_shards=True)), 20)
    assert sorted(in_order[:5]) == in_order[:5]  # no buffer: a shard's rows in its order


def test_a_shuffle_buffer_is_a_seeded_permutation():
    shuffled = list(shuffle_buffer(range(100), 10, np.random.default_rng(0)))
    assert sorted(shuffled) == list(range(100)) and shuffled != list(range(100))
    assert shuffled == list(shuffle_buffer(range(100), 10, np.random.default_rng(0)))
    assert list(shuffle_buffer(range(5), 0, np.random.default_rng(0))) == list(range(5))


@pytest.mark.parametrize(
    ("shards", "processes", "workers", "by_shards"),
    [(8, 2, 2, True), (4, 4, 1, True), (6, 2, 2, False), (3, 2, 1, False), (1, 4, 3, False), (5, 3, 2, False)],
)
def test_every_row_of_an_epoch_goes_to_exactly_one_slot(shards, processes, workers, by_shards):
    sizes = [7 + 3 * i for i in range(shards)]
    owners = Counter()
    for rank in range(processes):
        for worker in range(workers):
            plan = plan_slot(shards, rank, processes, worker, workers)
            assert plan.by_shards == by_shards or processes * workers == 1
            owners.update((shard, j) for shard in plan.positions for j in range(sizes[shard]) if plan.keeps(shard, j))
    assert owners == Counter((shard, j) for shard in range(shards) for j in range(sizes[shard]))


@pytest.mark.parametrize(("sizes", "reads_every_shard"), [([6, 6, 6, 6], False), ([9, 3, 6], True)])
def test_each_sample_is_decoded_by_one_process_once_per_epoch(stream, sizes, reads_every_shard):
    rows, total = stream(sizes), sum(sizes)
    keys, decoded, read = Counter(), [], []
    for processes in (1, 2, 4):
        keys.clear()
        for rank in range(processes):
            order = StreamOrder(seed=0, shuffle_shards=True, shuffle_buffer_size=4, process_index=rank,
                                num_processes=processes)  # fmt: skip
            dataset = IterableImageTextDataset(rows, SIZE, order=order)
            keys.update(sample[SAMPLE_KEY] for sample in dataset)
            (count,) = dataset.epoch_counts
            decoded.append((processes, count.decoded))
            read.append((processes, count.read))
        assert set(keys.values()) == {1} and len(keys) == total  # each sample once, in the whole job
    per_process = {n: sum(d for p, d in decoded if p == n) / n for n in (1, 2, 4)}
    assert per_process[2] == pytest.approx(total / 2, abs=2) and per_process[4] == pytest.approx(total / 4, abs=2)
    # 4 shards on 2 processes: each reads its own 2; 3 shards: each reads all 3 and decodes 1 row of 2.
    assert all((r == total) == reads_every_shard for p, r in read if p == 2)


def test_the_key_of_a_sample_does_not_depend_on_the_processes_or_the_order(stream):
    rows = stream([4, 4])
    alone = {s["caption"]: s[SAMPLE_KEY] for s in IterableImageTextDataset(rows, SIZE)}
    split = {}
    for rank in range(2):
        order = StreamOrder(seed=5, shuffle_shards=True, shuffle_buffer_size=3, process_index=rank, num_processes=2)
        split.update({s["caption"]: s[SAMPLE_KEY] for s in IterableImageTextDataset(rows, SIZE, order=order)})
    assert split == alone and len(alone) == 8
    # KeyedStream keeps a streamed sample's own key (the masks follow the sample, not its position).
    keyed = list(KeyedStream(IterableImageTextDataset(rows, SIZE, order=StreamOrder(1, True, 3))))
    assert {s["caption"]: s[SAMPLE_KEY] for s in keyed} == alone


def test_dataloader_workers_share_a_process_stream_without_overlap(stream):
    rows = stream([3, 4, 5, 6])
    order = StreamOrder(seed=2, shuffle_shards=True, shuffle_buffer_size=2, process_index=1, num_processes=2)
    dataset = IterableImageTextDataset(rows, SIZE, order=order)
    alone = sorted(sample["caption"] for sample in dataset)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2)
    assert sorted(sample["caption"] for sample in loader) == alone  # 2 workers: the process's rows, once each


def test_an_endless_stream_goes_on_and_an_empty_share_is_named(stream):
    rows = stream([3, 2])
    endless = IterableImageTextDataset(rows, SIZE, order=StreamOrder.for_training(0, 2))
    assert len(captions(endless, 23)) == 23  # 4 epochs and more of 5 rows
    assert [key[0] for key in (s[SAMPLE_KEY] for s in islice(endless, 12))] == [0] * 5 + [1] * 5 + [2] * 2
    lonely = IterableImageTextDataset([{"image": None, "caption": "x"}][:0], SIZE, order=StreamOrder(repeat=True))
    with pytest.raises(ValueError, match="process 0 of 1, worker 0 of 1 has no row of the stream in epoch 0"):
        next(iter(lonely))
    one_row = StreamOrder(repeat=True, process_index=1, num_processes=2)  # 1 shard of 1 row: nothing for process 1
    with pytest.raises(ValueError, match=r"process 1 of 2, .*share: .*s-000.tar, 1 row of 2\)"):
        next(iter(IterableImageTextDataset(stream([1]), SIZE, order=one_row)))


def test_accelerate_does_not_split_a_share_again(stream):
    rows = stream([2, 2])
    split = KeyedStream(IterableImageTextDataset(rows, SIZE, order=StreamOrder(process_index=1, num_processes=2)))
    whole = KeyedStream(IterableImageTextDataset(rows, SIZE))
    assert splits_across_processes(split) and not splits_across_processes(whole)
    for dataset, kept in ((split, 1), (whole, 2)):
        loader = torch.utils.data.DataLoader(IterableDatasetShard(dataset, 2, num_processes=2, process_index=1))
        assert keep_process_share(loader).dataset.num_processes == kept
    with pytest.raises(ValueError, match="needs accelerate's dispatch_batches=False"):
        keep_process_share(DataLoaderDispatcher(split, batch_size=2))


# ------------------------------------------------------------------------------------ two gloo processes
WORKER = os.path.join(os.path.dirname(__file__), "_streaming_worker.py")


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_on_uneven_shards_both_reach_the_last_step(tmp_path):
    """4 shards of 10, 2, 6 and 4 samples on 2 processes: each reads 2 shards an epoch (which 2 is drawn per epoch),
    so their epochs differ in length. Each goes on with its next epoch when its share runs out, and both stop at
    --max_steps: nobody waits for a batch that never comes."""
    from conftest import tiny_tokenizer
    from test_run_mcd import TINY_RUN

    pattern = write_shards(tmp_path, [10, 2, 6, 4])
    tiny_tokenizer().save_pretrained(tmp_path / "tokenizer")
    flags = [*TINY_RUN, "--dataset", pattern, "--streaming", "true", "--eval_synthetic", "false"]
    flags += ["--tokenizer_name_or_path", str(tmp_path / "tokenizer"), "--output_dir", str(tmp_path / "out")]
    flags += ["--per_device_train_batch_size", "2", "--max_steps", "9", "--shuffle_buffer_size", "3"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", WORKER]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([*command, *flags], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "out" / "mcd-model" / "model.safetensors").is_file()
    line = r"stream epoch (\d+), process (\d) of 2, worker 0 of 1: read (\d+) rows, kept (\d+)"
    epochs = re.findall(line, result.stderr)
    first = {int(rank): (int(read), int(kept)) for epoch, rank, read, kept in epochs if epoch == "0"}
    assert sorted(first) == [0, 1]
    assert sum(kept for _, kept in first.values()) == 22  # every sample of the epoch, once in the whole job
    assert all(read == kept < 22 for read, kept in first.values())  # each process read its own shards only
    assert first[0][1] != first[1][1]  # uneven: one process's epoch ran out first and it went on
    assert any(epoch == "1" for epoch, *_ in epochs)
