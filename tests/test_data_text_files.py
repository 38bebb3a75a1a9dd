# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Tests of modeling_mcd.data.text_files: caption files read row by row, every problem of a row recorded with its
file, line and column (the hostile corpus of _bad_corpus.py, CSV-specific problems), the whole-file errors, pair ids
and the data-folder boundary of relative paths."""

from __future__ import annotations

import json
import re

import pytest
from _bad_corpus import write_bad_corpus
from _data_helpers import SIZE, solid

from modeling_mcd.data import BAD_SAMPLE_REASONS, ImageTextDataset, load_image_text_dataset, read_caption_files
from modeling_mcd.objective.pairs import PADDING_PAIR_ID


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_bad_corpus(tmp_path_factory.mktemp("corpus"))


def test_every_line_of_the_hostile_corpus_gets_its_fate(corpus):
    assert len(corpus.bad) >= 20 and len(set(corpus.kinds[line] for line in corpus.bad)) >= 20
    assert {reason for reason, _ in corpus.bad.values()} <= set(BAD_SAMPLE_REASONS)
    rows = read_caption_files([corpus.path], "image", "caption")
    assert rows["line"] == list(range(1, len(corpus.good) + len(corpus.bad) + 1))  # one row a line, in order
    assert set(rows["file"]) == {corpus.path}
    found = {row["line"]: (row["bad_reason"], row["bad_column"]) for row in rows if row["bad_reason"]}
    assert found == corpus.load_bad  # reason and column of each line found bad while reading
    usable = {row["line"]: row["image"] for row in rows if row["bad_reason"] is None}
    decode_bad = {line for line in usable if line not in corpus.good}
    assert decode_bad == set(corpus.decode_bad)  # the rest are found when decoded
    assert {line: usable[line] for line in corpus.good} == corpus.good  # paths resolved against the file's folder
    captions = {row["line"]: row["caption"] for row in rows}
    assert captions[1] == ["a red photo"] and captions[3] == ["a cat", "a small cat"]  # mixed caption types


def test_two_captions_of_one_image_share_a_pair_id(corpus):
    rows = read_caption_files([corpus.path], "image", "caption")
    pair_of = {row["line"]: row["pair_id"] for row in rows}
    first, second = [line for line, image in corpus.good.items() if image.endswith("images/0.png")]
    assert pair_of[first] == pair_of[second] == first - 1  # the row index of the first row naming the image
    distinct = [pair_of[line] for line in corpus.good if line != second]
    assert len(set(distinct)) == len(distinct)
    assert all(pair_of[line] == PADDING_PAIR_ID for line in corpus.load_bad)


def test_the_dataset_leaves_bad_rows_out_before_training_or_stops_at_the_first(corpus, caplog):
    rows = load_image_text_dataset(corpus.path)
    dataset = ImageTextDataset(rows, SIZE)
    assert len(dataset) == len(corpus.good) + len(corpus.decode_bad)
    assert {(record.line, record.reason, record.column) for record in dataset.skipped_rows} == {
        (line, reason, column) for line, (reason, column) in corpus.load_bad.items()
    }
    assert f"{len(corpus.load_bad)} of {len(rows)} rows cannot be used" in caplog.text  # logged at warning level
    assert f"{corpus.path}:2: empty_line" in caplog.text
    first = min(corpus.bad)
    with pytest.raises(ValueError, match=rf"empty_line: {re.escape(corpus.path)}:{first}: an empty line"):
        ImageTextDataset(rows, SIZE, on_bad_sample="raise")
    line = next(line for line, (_, column) in sorted(corpus.load_bad.items()) if column == "caption")
    with pytest.raises(ValueError, match=rf"bad_encoding: {re.escape(corpus.path)}:{line}, column 'caption': caption"):
        ImageTextDataset(rows.select(range(2, len(rows))), SIZE, on_bad_sample="raise")


def write(path, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def test_csv_rows(tmp_path):
    for k in range(3):
        solid(k).save(tmp_path / f"{k}.png")
    lines = [
        b"image,caption,extra",
        b"0.png,a cat,x",  # 2
        b"1.png,a dog",  # 3: a field short
        b"1.png,a dog,x,y",  # 4: a field too many
        b"",  # 5
        b'2.png,"a bird\non two lines",x',  # 6-7: one record
        b"2.png,caf\xe9,x",  # 8
        b"2.png,a fish,caf\xe9",  # 9: bad bytes in an unused column: a good row
        b",a fish,x",  # 10
        b"2.png,,x",  # 11
        b"../0.png,a cat,x",  # 12
    ]
    path = write(tmp_path / "c.csv", b"\r\n".join(lines) + b"\r\n")
    rows = read_caption_files([path], "image", "caption")
    fates = {row["line"]: row["bad_reason"] and (row["bad_reason"], row["bad_column"]) for row in rows}
    assert fates == {
        2: None,
        3: ("wrong_field_count", None),
        4: ("wrong_field_count", None),
        5: ("empty_line", None),
        6: None,
        8: ("bad_encoding", "caption"),
        9: None,
        10: ("missing_value", "image"),
        11: ("empty_caption", "caption"),
        12: ("path_outside_data", "image"),
    }
    assert rows[4]["caption"] == ["a bird\non two lines"]
    assert rows["bad_detail"][1] == "2 fields, the header has 3"
    with pytest.raises(ValueError, match=r"caption_column='text' is not a column of .*c.csv; .*\['caption', 'extra'"):
        read_caption_files([path], "image", "text")
    quotes = write(tmp_path / "quotes.csv", b'image,caption\n0.png,"a cat"s\n0.png,a cat\n0.png,"a dog\n')
    assert [(row["line"], row["bad_reason"]) for row in read_caption_files([quotes], "image", "caption")] == [
        (2, "malformed_csv"),
        (3, None),
        (4, "unbalanced_quote"),  # a quote never closed
    ]


def test_paths_outside_the_data_folder_need_the_flag(tmp_path):
    (tmp_path / "data").mkdir()
    solid(0).save(tmp_path / "secret.png")
    solid(1).save(tmp_path / "data" / "in.png")
    rows = [
        {"image": "../secret.png", "caption": "a"},
        {"image": "sub/../../secret.png", "caption": "b"},
        {"image": "./sub/../in.png", "caption": "c"},  # stays inside
        {"image": str(tmp_path / "secret.png"), "caption": "d"},  # absolute: the file's explicit choice
    ]
    path = write(tmp_path / "data" / "c.jsonl", "".join(json.dumps(row) + "\n" for row in rows).encode())
    refused = load_image_text_dataset(path)
    assert refused["bad_reason"] == ["path_outside_data", "path_outside_data", None, None]
    assert refused["image"][2] == str(tmp_path / "data" / "in.png")
    allowed = load_image_text_dataset(path, allow_paths_outside_data=True)
    assert allowed["bad_reason"] == [None] * 4
    assert allowed["image"][:2] == [str(tmp_path / "secret.png")] * 2
    assert allowed["pair_id"] == [0, 0, 2, 0]  # three rows name one image


def test_whole_file_problems_raise_naming_the_file(tmp_path):
    with pytest.raises(ValueError, match="cannot read the caption file"):
        read_caption_files([str(tmp_path / "gone.jsonl")], "image", "caption")
    empty = write(tmp_path / "empty.csv", b"")
    with pytest.raises(ValueError, match="empty.csv has no readable CSV header"):
        read_caption_files([empty], "image", "caption")
    array = write(tmp_path / "a.json", b'[{"image": "x.png", "caption": "a"}, {"image": "x.png"')
    with pytest.raises(ValueError, match="a.json is neither JSON Lines nor a valid JSON array"):
        read_caption_files([array], "image", "caption")
    solid(0).save(tmp_path / "x.png")
    good_array = write(tmp_path / "b.json", b'[{"image": "x.png", "caption": "a"}, 3]')
    rows = read_caption_files([good_array], "image", "caption")
    assert rows["bad_reason"] == [None, "malformed_json"] and rows["line"] == [None, None]
