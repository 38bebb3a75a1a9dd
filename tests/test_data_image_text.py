# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Tests of modeling_mcd.data.image_text: the map-style and streaming datasets under the bad-sample policy,
the caption draw per index and epoch, and `KeyedSamples`."""

from __future__ import annotations

import logging
from collections import Counter

import datasets
import pytest
import torch

from modeling_mcd.data import (
    BAD_SAMPLE_REASONS,
    SAMPLE_KEY,
    BadSampleCounter,
    BadSampleError,
    ImageTextDataset,
    IterableImageTextDataset,
    KeyedSamples,
    MCDCollator,
    image_text_dataset,
    load_image_text_dataset,
    select_caption,
)

from _data_helpers import SIZE, expected_pixels, good_and_bad_rows, solid, word_tokenizer, write_table


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer()


def test_list_captions_draw_one_per_index_and_epoch(tmp_path):
    captions = ["a cat", "a dog", "a bird", "the sky"]
    solid(0).save(tmp_path / "0.png")
    write_table(tmp_path / "c.jsonl", "json", [{"image": "0.png", "caption": captions}] * 40)
    dataset = ImageTextDataset(load_image_text_dataset(str(tmp_path / "c.jsonl"), cache_dir=str(tmp_path / "c")), SIZE)
    epoch0 = [dataset[i]["caption"] for i in range(40)]
    assert set(epoch0) == set(captions)  # every caption gets drawn over 40 indices
    assert epoch0 == [dataset[i]["caption"] for i in range(40)]  # deterministic
    dataset.set_epoch(1)
    epoch1 = [dataset[i]["caption"] for i in range(40)]
    assert set(epoch1) == set(captions) and epoch1 != epoch0
    assert epoch1 == [select_caption(captions, seed=0, index=i, epoch=1) for i in range(40)]
    # Invalid entries of a list are never drawn; a list without a valid entry is a bad sample.
    assert {select_caption(["", "a cat", None], index=i) for i in range(20)} == {"a cat"}
    with pytest.raises(BadSampleError) as error:
        select_caption(["  ", None])
    assert error.value.reason == "empty_caption"


def test_skip_counts_every_kind_and_keeps_batches_full(tmp_path, tokenizer, caplog):
    rows, bad = good_and_bad_rows(tmp_path)
    assert set(bad.values()) == set(BAD_SAMPLE_REASONS)
    dataset = ImageTextDataset(rows, SIZE, max_pixels=1_000_000)
    counter = BadSampleCounter()
    for i in range(len(dataset)):
        with caplog.at_level(logging.DEBUG, logger="modeling_mcd.data"):
            caplog.clear()
            sample = dataset[i]
        assert any(f"row {i}" in record.getMessage() for record in caplog.records) == (i in bad)
        source_row = i + 1 if i in bad else i  # a bad row is replaced by the next one
        assert torch.equal(sample["pixel_values"], expected_pixels(source_row))
        assert sample["skipped"] == ({bad[i]: 1} if i in bad else {})
        counter.update(sample["skipped"])
    assert counter.as_dict() == dict(sorted(Counter(bad.values()).items()))
    assert counter.total == len(bad)

    collator = MCDCollator(tokenizer, mlm_probability=0.0)
    batch = collator([dataset[i] for i in range(5)])  # rows 1 and 3 are bad
    assert batch["pixel_values"].shape == (5, 3, SIZE, SIZE)
    assert batch["bad_samples"] == dict(Counter(bad[i] for i in (1, 3)))


def test_skip_wraps_around_and_gives_up_on_long_bad_stretches(tmp_path):
    solid(0).save(tmp_path / "0.png")
    rows = [{"image": str(tmp_path / "0.png"), "caption": "a cat"}] + [{"image": None, "caption": "x"}] * 5
    dataset = ImageTextDataset(rows, SIZE)
    assert torch.equal(dataset[5]["pixel_values"], expected_pixels(0))  # the last row wraps to row 0
    with pytest.raises(RuntimeError, match="3 bad samples in a row"):
        ImageTextDataset(rows, SIZE, max_consecutive_bad=2)[1]
    with pytest.raises(RuntimeError, match="bad samples in a row"):
        ImageTextDataset(rows[1:], SIZE)[0]  # nothing decodable at all
    with pytest.raises(RuntimeError, match="2 bad samples in a row"):
        list(IterableImageTextDataset(rows[1:], SIZE, max_consecutive_bad=2))


def test_raise_names_the_row_the_file_and_the_reason(tmp_path):
    rows, bad = good_and_bad_rows(tmp_path)
    dataset = ImageTextDataset(rows, SIZE, on_bad_sample="raise", max_pixels=1_000_000)
    for i, reason in bad.items():
        with pytest.raises(BadSampleError) as error:
            dataset[i]
        assert error.value.reason == reason
        assert f"row {i} ({rows[i]['image']})" in str(error.value) and reason in str(error.value)
    assert dataset[0]["skipped"] == {}


def test_iterable_twin_has_the_same_policy(tmp_path):
    rows, bad = good_and_bad_rows(tmp_path)
    samples = list(IterableImageTextDataset(iter(rows), SIZE, max_pixels=1_000_000))
    good = [i for i in range(len(rows)) if i not in bad]
    assert len(samples) == len(good)
    for i, sample in zip(good, samples):
        assert torch.equal(sample["pixel_values"], expected_pixels(i))
        assert sample["skipped"] == ({bad[i - 1]: 1} if i - 1 in bad else {})
    first_bad = min(bad)
    with pytest.raises(BadSampleError, match=f"sample {first_bad} of the stream"):
        list(IterableImageTextDataset(rows, SIZE, on_bad_sample="raise", max_pixels=1_000_000))
    hf_rows = datasets.Dataset.from_list([{"image": row["image"], "caption": "a cat"} for row in rows])
    assert isinstance(image_text_dataset(hf_rows.to_iterable_dataset(), SIZE), IterableImageTextDataset)
    assert isinstance(image_text_dataset(hf_rows, SIZE), ImageTextDataset)


def test_counts_survive_dataloader_workers(tmp_path, tokenizer):
    rows, bad = good_and_bad_rows(tmp_path)
    # Captions of mixed types (str, None, int) do not fit in Arrow: a list of dicts is the source here.
    dataset = ImageTextDataset(rows, SIZE, max_pixels=1_000_000)
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=MCDCollator(tokenizer))
    counter = BadSampleCounter()
    for batch in loader:
        assert batch["pixel_values"].shape[1:] == (3, SIZE, SIZE)
        counter.update(batch["bad_samples"])
    assert counter.as_dict() == dict(sorted(Counter(bad.values()).items()))
    assert str(counter.total) in counter.summary() and "corrupt=1" in counter.summary()


class EpochRows(list):
    """Rows that record the epoch they were given, like `ImageTextDataset.set_epoch`."""

    epoch = None

    def set_epoch(self, epoch):
        self.epoch = epoch


def test_keyed_samples_carry_epoch_and_index():
    rows = EpochRows([{"caption": "a cat"}, {"caption": "a dog"}])
    keyed = KeyedSamples(rows)
    assert len(keyed) == 2 and keyed[1] == {"caption": "a dog", SAMPLE_KEY: (0, 1)}
    keyed.set_epoch(3)
    assert rows.epoch == 3  # forwarded: the wrapped dataset seeds its caption draw with it
    assert keyed[0] == {"caption": "a cat", SAMPLE_KEY: (3, 0)}
    with pytest.raises(TypeError, match="dict samples"):
        KeyedSamples(["not a dict"])[0]
