# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Tests of modeling_mcd.data.image_text: the map-style and streaming datasets under the bad-sample policy,
the caption draw per index and epoch, and `KeyedSamples`."""

from __future__ import annotations

import logging
from collections import Counter

import datasets
import pytest
import torch
from _data_helpers import SIZE, expected_pixels, good_and_bad_rows, solid, word_tokenizer, write_table

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
from modeling_mcd.objective.pairs import PADDING_PAIR_ID


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


#: What `good_and_bad_rows` holds: every reason a row can only be found bad with when it is decoded.
DECODE_TIME_REASONS = BAD_SAMPLE_REASONS[:8]


def reasons_of(skipped: dict) -> dict:
    return {reason: len(records) for reason, records in skipped.items()}


def test_a_row_bad_when_decoded_is_a_placeholder_that_is_counted_and_named(tmp_path, tokenizer, caplog):
    rows, bad = good_and_bad_rows(tmp_path)
    assert set(bad.values()) == set(DECODE_TIME_REASONS)
    dataset = ImageTextDataset(rows, SIZE, max_pixels=1_000_000)
    counter = BadSampleCounter()
    for i in range(len(dataset)):
        with caplog.at_level(logging.WARNING, logger="modeling_mcd.data"):
            caplog.clear()
            sample = dataset[i]
        assert any(f"skipping row {i} (" in record.getMessage() for record in caplog.records) == (i in bad)
        if i in bad:  # a blank image, an empty caption and the placeholder's pair id: the loss never sees it
            assert torch.equal(sample["pixel_values"], torch.zeros(3, SIZE, SIZE, dtype=torch.uint8))
            assert (sample["caption"], sample["pair_id"]) == ("", PADDING_PAIR_ID)
            ((reason, (record,)),) = sample["skipped"].items()
            assert reason == bad[i] and record["row"] == i and record["line"] is None
            assert record["column"] == ("caption" if "caption" in reason else "image")
        else:  # never another row's sample: no pair twice in a batch
            assert torch.equal(sample["pixel_values"], expected_pixels(i)) and sample["pair_id"] == i
            assert sample["skipped"] == {}
        counter.update(sample["skipped"])
    assert counter.as_dict() == dict(sorted(Counter(bad.values()).items()))
    assert counter.total == len(bad) and len(counter.rows) == len(bad)

    collator = MCDCollator(tokenizer, mlm_probability=0.3)
    batch = collator([dataset[i] for i in range(5)])  # rows 1 and 3 are bad
    assert batch["pixel_values"].shape == (5, 3, SIZE, SIZE)
    assert batch["pair_ids"].tolist() == [0, PADDING_PAIR_ID, 2, PADDING_PAIR_ID, 4]
    assert reasons_of(batch["bad_samples"]) == dict(Counter(bad[i] for i in (1, 3)))
    assert (batch["mlm_labels"][[1, 3]] == -100).all()  # a placeholder's empty caption has nothing to mask


def test_gives_up_on_long_bad_stretches(tmp_path):
    solid(0).save(tmp_path / "0.png")
    rows = [{"image": str(tmp_path / "0.png"), "caption": "a cat"}] + [{"image": None, "caption": "x"}] * 5
    dataset = ImageTextDataset(rows, SIZE, max_consecutive_bad=3)
    for i in (1, 2, 0, 3, 4):  # a good row in between starts the count again
        dataset[i]
    with pytest.raises(RuntimeError, match="3 bad samples in a row"):
        dataset[5]
    with pytest.raises(RuntimeError, match="2 bad samples in a row"):
        list(IterableImageTextDataset(rows[1:], SIZE, max_consecutive_bad=2))


def test_raise_names_the_row_the_file_the_column_and_the_reason(tmp_path):
    rows, bad = good_and_bad_rows(tmp_path)
    dataset = ImageTextDataset(rows, SIZE, on_bad_sample="raise", max_pixels=1_000_000)
    for i, reason in bad.items():
        with pytest.raises(BadSampleError) as error:
            dataset[i]
        assert error.value.reason == reason
        assert str(error.value).startswith(f"{reason}: row {i} ({rows[i]['image']}), column '{error.value.column}'")
    assert dataset[0]["skipped"] == {}


def test_iterable_twin_has_the_same_policy(tmp_path):
    rows, bad = good_and_bad_rows(tmp_path)
    samples = list(IterableImageTextDataset(iter(rows), SIZE, max_pixels=1_000_000))
    good = [i for i in range(len(rows)) if i not in bad]
    assert len(samples) == len(good)  # a stream simply leaves a bad row out
    for i, sample in zip(good, samples):
        assert torch.equal(sample["pixel_values"], expected_pixels(i))
        assert reasons_of(sample["skipped"]) == ({bad[i - 1]: 1} if i - 1 in bad else {})
        assert "pair_id" not in sample  # a stream's positions are no pair ids
    first_bad = min(bad)
    with pytest.raises(BadSampleError, match=f"row {first_bad} "):
        list(IterableImageTextDataset(rows, SIZE, on_bad_sample="raise", max_pixels=1_000_000))
    hf_rows = datasets.Dataset.from_list([{"image": row["image"], "caption": "a cat"} for row in rows])
    assert isinstance(image_text_dataset(hf_rows.to_iterable_dataset(), SIZE), IterableImageTextDataset)
    assert isinstance(image_text_dataset(hf_rows, SIZE), ImageTextDataset)


def test_a_streamed_caption_file_skips_its_bad_rows_as_it_meets_them(tmp_path):
    solid(0).save(tmp_path / "0.png")
    lines = ['{"image": "0.png", "caption": "a cat"}', "{not json", '{"image": "0.png", "caption": "a dog"}', "[]"]
    (tmp_path / "c.jsonl").write_text("\n".join(lines))
    samples = list(image_text_dataset(load_image_text_dataset(str(tmp_path / "c.jsonl"), streaming=True), SIZE))
    assert [(sample["caption"], sample["pair_id"]) for sample in samples] == [("a cat", 0), ("a dog", 0)]
    # A row known bad from the file rides with the sample before it: the one after the last sample is counted too.
    ((first,),), ((last,),) = (sample["skipped"].values() for sample in samples)
    assert (first["file"], first["line"], first["reason"]) == (str(tmp_path / "c.jsonl"), 2, "malformed_json")
    assert (last["line"], last["reason"]) == (4, "malformed_json")


def test_records_survive_dataloader_workers(tmp_path, tokenizer):
    rows, bad = good_and_bad_rows(tmp_path)
    # Captions of mixed types (str, None, int) do not fit in Arrow: a list of dicts is the source here.
    dataset = ImageTextDataset(rows, SIZE, max_pixels=1_000_000)
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=MCDCollator(tokenizer))
    counter = BadSampleCounter()
    for batch in loader:
        assert batch["pixel_values"].shape[1:] == (3, SIZE, SIZE)
        counter.update(batch["bad_samples"])
    assert counter.as_dict() == dict(sorted(Counter(bad.values()).items()))
    assert sorted(record["row"] for record in counter.rows.values()) == sorted(bad)
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
