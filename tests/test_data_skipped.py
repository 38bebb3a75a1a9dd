# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Tests of modeling_mcd.data.skipped: the record of a skipped row, the running totals, and the run's
`skipped_samples.jsonl`."""

from __future__ import annotations

import json
import logging
import pickle

from modeling_mcd.data import SKIPPED_SAMPLES_FILE, BadSampleCounter, BadSampleError, SkippedRow, save_skipped_samples


def test_a_record_names_the_file_and_line_or_the_row():
    from_file = SkippedRow("bad_encoding", "byte 0xe9", file="c.jsonl", line=4, row=3, column="caption")
    assert from_file.where() == "c.jsonl:4, column 'caption'"
    assert str(from_file.error()) == "bad_encoding: c.jsonl:4, column 'caption': byte 0xe9"
    from_hub = SkippedRow.from_error(BadSampleError("corrupt", "x.png: broken", "image"), {"image": "x.png"}, 7)
    assert from_hub.where() == "row 7 (x.png), column 'image'" and from_hub.line is None
    row = {"image": "/d/x.png", "file": "/d/c.csv", "line": 12, "caption": ["a"]}
    assert SkippedRow.from_error(BadSampleError("truncated", "cut"), row, 3).where() == "/d/c.csv:12"
    error = pickle.loads(pickle.dumps(from_file.error()))  # crosses DataLoader workers whole
    assert (error.reason, error.column) == ("bad_encoding", "caption")


def test_bad_sample_counter():
    counter = BadSampleCounter()
    assert counter.total == 0 and counter.summary() == "0 bad samples skipped"
    for skipped in ({"corrupt": 2}, {}, {"missing_file": 1, "corrupt": 1}, {"empty_caption": 0}):
        counter.update(skipped)
    assert counter.as_dict() == {"corrupt": 3, "missing_file": 1}
    assert counter.summary() == "4 bad samples skipped (corrupt=3, missing_file=1)"
    record = SkippedRow("truncated", "cut", file="c.jsonl", line=2, row=1, column="image").as_dict()
    for _ in range(3):  # the same row, skipped in three epochs: counted three times, listed once
        counter.update({"truncated": [record]})
    assert counter.as_dict()["truncated"] == 3 and list(counter.rows.values()) == [record]


def test_save_skipped_samples_lists_each_row_once_and_logs_the_counts(tmp_path, caplog):
    rows = [
        SkippedRow("empty_line", "an empty line", file="b.jsonl", line=9, row=8),
        SkippedRow("corrupt", "x", file="a.jsonl", line=3, row=2, column="image").as_dict(),
        SkippedRow("corrupt", "x", file="a.jsonl", line=3, row=2, column="image"),  # also from another process
        SkippedRow("empty_caption", "caption is empty: ''", file="a.jsonl", line=1, row=0, column="caption"),
    ]
    with caplog.at_level(logging.WARNING):
        path = save_skipped_samples(str(tmp_path / "run"), rows)
    assert path == str(tmp_path / "run" / SKIPPED_SAMPLES_FILE)
    saved = [json.loads(line) for line in open(path)]
    assert [(r["file"], r["line"], r["reason"]) for r in saved] == [
        ("a.jsonl", 1, "empty_caption"),
        ("a.jsonl", 3, "corrupt"),
        ("b.jsonl", 9, "empty_line"),
    ]
    assert set(saved[0]) == {"file", "line", "row", "column", "reason", "detail"}
    assert "3 rows of the training data were skipped (corrupt=1, empty_caption=1, empty_line=1)" in caplog.text
    assert (
        save_skipped_samples(str(tmp_path / "clean"), [])
        and open(tmp_path / "clean" / SKIPPED_SAMPLES_FILE).read() == ""
    )
