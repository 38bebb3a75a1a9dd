# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Hostile caption files: nothing is silent and no good row is lost. Invisible captions, CSV quotes that swallow
rows, UTF-16 files and a BOM on every line, CR-only line ends, NUL bytes, duplicate columns and keys, empty and
header-only files, a field past the CSV size limit. Each test writes its files in a tmp dir."""

from __future__ import annotations

import csv
import json
import logging

import pytest
from _data_helpers import SIZE, solid

from modeling_mcd.data import ImageTextDataset, load_image_text_dataset, read_caption_files

INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\x00", "\u00ad", "\u3164", "\x1f"]


@pytest.fixture
def images(tmp_path):
    for k in range(10):
        solid(k).save(tmp_path / f"{k}.png")
    return tmp_path


def write(path, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def fates(rows) -> list[tuple]:
    """(line, reason, caption) of each row, in order."""
    return [(row["line"], row["bad_reason"], row["caption"][0] if row["caption"] else None) for row in rows]


def detail(rows, line: int) -> str:
    return next(row["bad_detail"] for row in rows if row["line"] == line)


# ------------------------------------------------------------------------------------------------ captions
def test_a_caption_of_only_invisible_characters_is_empty_in_every_file_kind(images):
    captions = ["".join(INVISIBLE), "\x00\x00", "\u200b \u2060\t", *INVISIBLE]
    jsonl = "".join(json.dumps({"image": "0.png", "caption": c}) + "\n" for c in captions)
    rows = read_caption_files([write(images / "c.jsonl", jsonl.encode())], "image", "caption")
    assert rows["bad_reason"] == ["empty_caption"] * len(captions)
    csv_text = "image,caption\n" + "".join(f"0.png,{c}\n" for c in captions if "\x00" not in c)
    rows = read_caption_files([write(images / "c.csv", csv_text.encode())], "image", "caption")
    assert set(rows["bad_reason"]) == {"empty_caption"}
    # A list whose entries are all invisible is a bad row too; a visible entry survives, cleaned of its edges.
    mixed = json.dumps({"image": "0.png", "caption": ["\u200b", "\ufeffa cat\u200b", "cafe\u0301"]}) + "\n"
    (row,) = read_caption_files([write(images / "m.jsonl", mixed.encode())], "image", "caption")
    assert row["bad_reason"] is None and row["caption"] == ["a cat", "cafe\u0301"]


def test_nul_bytes_inside_a_caption_or_a_path_are_a_bad_row_not_a_dead_run(images):
    rows = [
        {"image": "0.png", "caption": "a\x00 \x00c\x00a\x00t"},  # UTF-16 text pasted into a UTF-8 file
        {"image": "0.png\x00", "caption": "a cat"},  # os.stat refuses a NUL: this used to raise
        {"image": "1.png", "caption": "a dog"},
    ]
    path = write(images / "c.jsonl", "".join(json.dumps(row) + "\n" for row in rows).encode())
    found = read_caption_files([path], "image", "caption")
    assert [(row["bad_reason"], row["bad_column"]) for row in found] == [
        ("bad_encoding", "caption"),
        ("bad_encoding", "image"),
        (None, None),
    ]
    assert "NUL" in found[0]["bad_detail"] and "NUL" in found[1]["bad_detail"]


# ------------------------------------------------------------------------------------------- CSV quotes
def test_a_quote_closed_lines_later_does_not_merge_rows(images):
    text = (
        "image,caption\n"
        '0.png,"a cat\n'  # 2: the quote opens...
        "1.png,a dog\n"
        "2.png,a bird\n"
        "3.png,a fish\n"
        '4.png,a cow"\n'  # 6: ... and closes here, five rows later
        "5.png,a pig\n"
    )
    rows = read_caption_files([write(images / "c.csv", text.encode())], "image", "caption")
    assert fates(rows) == [
        (2, "unbalanced_quote", None),
        (3, None, "a dog"),
        (4, None, "a bird"),
        (5, None, "a fish"),
        (6, "unbalanced_quote", None),
        (7, None, "a pig"),
    ]
    assert "lines 2-6" in detail(rows, 2) and "line 2" in detail(rows, 6)
    dataset = ImageTextDataset(load_image_text_dataset(str(images / "c.csv")), SIZE)
    assert len(dataset) == 4 and len(dataset.skipped_rows) == 2


def test_a_quote_never_closed_loses_only_its_own_row(images):
    good = [f"{k}.png,caption {k}" for k in range(1, 9)]
    text = "\n".join(["image,caption", '0.png,"caption 0', *good]) + "\n"
    rows = read_caption_files([write(images / "c.csv", text.encode())], "image", "caption")
    assert fates(rows) == [(2, "unbalanced_quote", None)] + [(k + 2, None, f"caption {k}") for k in range(1, 9)]
    assert "never closed" in detail(rows, 2) and "lines 2-10" in detail(rows, 2)
    with pytest.raises(ValueError, match=r"unbalanced_quote: .*c.csv:2"):
        ImageTextDataset(load_image_text_dataset(str(images / "c.csv")), SIZE, on_bad_sample="raise")
    # On the last line, the quote takes nothing with it.
    last = write(images / "last.csv", b'image,caption\n0.png,a cat\n1.png,"a dog\n')
    assert fates(read_caption_files([last], "image", "caption")) == [(2, None, "a cat"), (3, "unbalanced_quote", None)]


def test_a_bad_quote_inside_a_multi_line_record_re_reads_the_lines_it_took(images):
    text = (
        "image,caption\n"
        '0.png,"a cat\n'  # 2: never closed...
        "1.png,a dog\n"
        '2.png,"a bird"\n'  # 4: ... and this quote cannot end line 2's field
        "3.png,a fish\n"
    )
    rows = read_caption_files([write(images / "c.csv", text.encode())], "image", "caption")
    assert fates(rows) == [(2, "unbalanced_quote", None), (3, None, "a dog"), (4, None, "a bird"), (5, None, "a fish")]


def test_captions_on_several_lines_stay_one_record(images):
    text = 'image,caption\n0.png,"a cat\non a mat, asleep\nin the sun"\n1.png,"a ""quoted"" dog"\n'
    rows = read_caption_files([write(images / "c.csv", text.encode())], "image", "caption")
    assert fates(rows) == [(2, None, "a cat\non a mat, asleep\nin the sun"), (5, None, 'a "quoted" dog')]


def test_a_field_past_the_csv_size_limit_is_one_bad_row(images):
    text = "image,caption\n0.png,a cat\n1.png," + "x" * 200_000 + "\n2.png,a dog\n"
    rows = read_caption_files([write(images / "c.csv", text.encode())], "image", "caption")
    assert fates(rows) == [(2, None, "a cat"), (3, "malformed_csv", None), (4, None, "a dog")]
    assert "field larger than field limit" in detail(rows, 3)


# --------------------------------------------------------------------------------------------- encodings
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_a_utf16_file_reads_as_its_text(images, kind, encoding):
    """`utf-16` writes a BOM; `-le`/`-be` write none: those are recognised by their NUL bytes."""
    if kind == "jsonl":
        rows = [{"image": f"{k}.png", "caption": f"caf\u00e9 {k}"} for k in range(3)]
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    else:
        text = "image,caption\r\n" + "".join(f"{k}.png,caf\u00e9 {k}\r\n" for k in range(3))
    path = write(images / f"c.{kind}", text.encode(encoding))
    rows = read_caption_files([path], "image", "caption")
    first_line = 1 if kind == "jsonl" else 2
    assert fates(rows) == [(first_line + k, None, f"caf\u00e9 {k}") for k in range(3)]


def test_a_utf16_file_that_is_not_valid_utf16_is_refused_naming_the_file_and_line(images):
    text = "".join(json.dumps({"image": f"{k}.png", "caption": f"c{k}"}) + "\n" for k in range(3))
    data = text.encode("utf-16")
    cut = data.index("c2".encode("utf-16-le"))
    path = write(images / "c.jsonl", data[:cut] + b"\x00\xdc" + data[cut:])  # a lone low surrogate, line 3
    with pytest.raises(ValueError, match=r"c.jsonl is UTF-16-LE text, but its line 3 is not"):
        read_caption_files([path], "image", "caption")


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_a_bom_at_the_start_of_every_line_is_not_part_of_the_row(images, kind):
    """Files made by concatenating files that each start with a BOM (`cat a.csv b.csv`)."""
    if kind == "jsonl":
        lines = [json.dumps({"image": f"{k}.png", "caption": f"c{k}"}) for k in range(3)]
    else:
        lines = ["image,caption", "0.png,c0", "image,caption", "1.png,c1", "2.png,c2"]
    path = write(images / f"c.{kind}", "".join("\ufeff" + line + "\n" for line in lines).encode())
    rows = read_caption_files([path], "image", "caption")
    if kind == "jsonl":
        assert fates(rows) == [(1, None, "c0"), (2, None, "c1"), (3, None, "c2")]
    else:  # the second header is a row of its own, named as what it is
        assert fates(rows) == [(2, None, "c0"), (3, "malformed_csv", None), (4, None, "c1"), (5, None, "c2")]
        assert "header" in detail(rows, 3)


def test_a_utf16_line_in_a_utf8_file_is_a_bad_row(images):
    good = json.dumps({"image": "0.png", "caption": "a cat"}) + "\n"
    utf16 = json.dumps({"image": "1.png", "caption": "a dog"}).encode("utf-16-le") + b"\n"
    path = write(images / "c.jsonl", good.encode() + utf16 + good.encode())
    rows = read_caption_files([path], "image", "caption")
    assert [row["bad_reason"] for row in rows] == [None, "bad_encoding", None]
    assert rows["line"] == [1, 2, 3] and "NUL" in rows[1]["bad_detail"]


def test_cr_only_line_ends_give_one_row_a_line(images):
    jsonl = "\r".join(json.dumps({"image": f"{k}.png", "caption": f"c{k}"}) for k in range(3)) + "\r"
    rows = read_caption_files([write(images / "c.jsonl", jsonl.encode())], "image", "caption")
    assert fates(rows) == [(1, None, "c0"), (2, None, "c1"), (3, None, "c2")]
    csv_text = "image,caption\r0.png,c0\r1.png,c1\r"
    rows = read_caption_files([write(images / "c.csv", csv_text.encode())], "image", "caption")
    assert fates(rows) == [(2, None, "c0"), (3, None, "c1")]


# ------------------------------------------------------------------------------------- columns and keys
def test_a_column_named_twice_in_a_csv_header_is_refused(images):
    path = write(images / "c.csv", b"image,caption,caption\n0.png,a cat,a dog\n")
    with pytest.raises(ValueError, match=r"c.csv names the column 'caption' twice"):
        read_caption_files([path], "image", "caption")
    unused = write(images / "u.csv", b"image,caption,x,x\n0.png,a cat,1,2\n")
    assert read_caption_files([unused], "image", "caption")["bad_reason"] == [None]


def test_a_key_given_twice_in_a_json_line_is_a_bad_row(images):
    text = '{"image": "0.png", "caption": "a cat", "caption": "a dog"}\n{"image": "1.png", "caption": "a bird"}\n'
    rows = read_caption_files([write(images / "c.jsonl", text.encode())], "image", "caption")
    assert fates(rows) == [(1, "malformed_json", None), (2, None, "a bird")]
    assert "'caption' twice" in detail(rows, 1)


def test_a_header_unclosed_quote_is_refused(images):
    path = write(images / "c.csv", b'image,"caption\n0.png,a cat\n')
    with pytest.raises(ValueError, match=r"c.csv: the CSV header"):
        read_caption_files([path], "image", "caption")


def test_an_empty_or_header_only_file_among_others_is_named(images, caplog):
    good = write(images / "a.csv", b"image,caption\n0.png,a cat\n")
    header_only = write(images / "b.csv", b"image,caption\n")
    with caplog.at_level(logging.WARNING, logger="modeling_mcd.data"):
        rows = read_caption_files([good, header_only], "image", "caption")
    assert len(rows) == 1 and f"{header_only} holds no row" in caplog.text
    caplog.clear()
    empty = write(images / "e.jsonl", b"")
    one_row = write(images / "a.jsonl", b'{"image": "0.png", "caption": "a"}\n')
    with caplog.at_level(logging.WARNING, logger="modeling_mcd.data"):
        read_caption_files([one_row, empty], "image", "caption")
    assert f"{empty} holds no row" in caplog.text


def test_unusable_captions_of_a_list_are_counted_and_their_row_kept(images, caplog):
    rows = [
        {"image": "0.png", "caption": ["a cat", "", "\u200b", 7]},  # three of four cannot be used
        {"image": "1.png", "caption": ["a dog", "a small dog"]},
        {"image": "2.png", "caption": [None, "a bird"]},
    ]
    path = write(images / "c.jsonl", "".join(json.dumps(row) + "\n" for row in rows).encode())
    with caplog.at_level(logging.WARNING, logger="modeling_mcd.data"):
        found = read_caption_files([path], "image", "caption")
    assert found["caption"] == [["a cat"], ["a dog", "a small dog"], ["a bird"]] and set(found["bad_reason"]) == {None}
    assert f"{path}: 4 captions in lists of captions cannot be used" in caplog.text and "first on line 1" in caplog.text


def test_random_quotes_and_line_ends_never_stop_the_reading(images):
    """Seeded fragments of quotes, separators and line ends: every file reads to its end, one record per start line,
    in order, and no good record holds a line shaped like a row of its own."""
    import random

    from modeling_mcd.data.csv_records import csv_records
    from modeling_mcd.data.text_lines import physical_lines

    def row_shaped(line: str) -> bool:
        try:
            fields = next(csv.reader([line], strict=True))
        except csv.Error:
            return False
        return len(fields) == 2 and fields[0] in ("0.png", "1.png")

    pieces = ["0.png", "1.png", "a cat", '"a dog"', '"a', 'b"', '""', '"x""y"', "", 'z"', '"two\nlines"', "\r"]
    rng = random.Random(0)
    for _ in range(500):
        rows = [",".join(rng.choice(pieces) for _ in range(rng.randint(1, 3))) for _ in range(rng.randint(0, 10))]
        lines = physical_lines("image,caption\n" + "".join(row + rng.choice(["\n", "\r\n"]) for row in rows))
        records = list(csv_records(lines, "f.csv", ("image", "caption")))
        starts = [line for line, _ in records]
        assert starts == sorted(set(starts)) and all(2 <= line <= len(lines) for line in starts)
        for (line, record), end in zip(records, [*starts[1:], len(lines) + 1]):
            if isinstance(record, dict):  # its other lines (0-based line .. end - 2): not rows of their own
                assert not any(row_shaped(lines[i]) for i in range(line, end - 1)), (lines, records)
