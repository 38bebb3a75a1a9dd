# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Tests of modeling_mcd.data.sources: opening imagefolder directories, jsonl/csv files and webdataset shards,
normalised to `image` + `caption`. Fixtures are made in tmp dirs (see _data_helpers); nothing is downloaded."""

from __future__ import annotations

import io
import json
import tarfile

import datasets
import pytest
import torch
from _data_helpers import SIZE, color, encode, expected_pixels, solid, write_table

from modeling_mcd.data import (
    BadSampleError,
    ImageTextDataset,
    IterableImageTextDataset,
    decode_image,
    expand_braces,
    load_image_text_dataset,
)


def test_expand_braces_matches_product():
    pattern = "s{08..11}/{a,b}.tar"
    naive = [f"s{i:02d}/{x}.tar" for i in range(8, 12) for x in "ab"]
    assert expand_braces(pattern) == naive
    assert expand_braces("{1..3}") == ["1", "2", "3"]
    assert expand_braces("plain.tar") == ["plain.tar"]


def assert_rows_decode_to(dataset, expected_captions, expected_colors):
    rows = list(dataset)
    assert [row["caption"] for row in rows] == expected_captions
    for row, k in zip(rows, expected_colors):
        assert decode_image(row["image"]).getpixel((0, 0)) == color(k)


def test_imagefolder_with_metadata(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    with open(folder / "metadata.jsonl", "w") as f:
        for k in range(3):
            solid(k).save(folder / f"{k}.png")
            f.write(json.dumps({"file_name": f"{k}.png", "text": f"caption {k}", "extra": k}) + "\n")
    dataset = load_image_text_dataset(str(folder), caption_column="text", cache_dir=str(tmp_path / "cache"))
    assert dataset.column_names == ["image", "caption"]
    assert dataset.features["image"].decode is False  # decoding is left to the bad-sample policy
    rows = sorted(dataset, key=lambda row: row["caption"])
    assert [row["caption"] for row in rows] == [f"caption {k}" for k in range(3)]
    for k, row in enumerate(rows):
        assert decode_image(row["image"]).getpixel((0, 0)) == color(k)
    # A decoding Image column handed to the wrapper is made lazy, so its policy sees the raw file.
    wrapped = ImageTextDataset(dataset.cast_column("image", datasets.Image()), SIZE)
    assert wrapped.dataset.features["image"].decode is False
    corners = sorted(tuple(wrapped[i]["pixel_values"][:, 0, 0].tolist()) for i in range(3))
    assert corners == sorted(map(color, range(3)))


@pytest.mark.parametrize("kind", ["json", "csv"])
@pytest.mark.parametrize("streaming", [False, True])
def test_table_files_resolve_paths_relative_to_the_file(tmp_path, monkeypatch, kind, streaming):
    ext = "jsonl" if kind == "json" else "csv"
    absolute = tmp_path / "elsewhere" / "abs.png"
    absolute.parent.mkdir()
    solid(9).save(absolute)
    for d, ks in (("d1", (0, 1)), ("d2", (2,))):
        (tmp_path / d / "imgs").mkdir(parents=True)
        for k in ks:
            solid(k).save(tmp_path / d / "imgs" / f"{k}.png")
        rows = [{"path": f"imgs/{k}.png", "text": f"cap {k}"} for k in ks]
        if d == "d2":
            rows.append({"path": str(absolute), "text": "absolute"})
        write_table(tmp_path / d / f"captions.{ext}", kind, rows)
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    monkeypatch.chdir(workdir)  # relative paths must not depend on the working directory
    source = str(tmp_path / f"{{d1,d2}}/captions.{ext}")
    dataset = load_image_text_dataset(
        source, image_column="path", caption_column="text", streaming=streaming, cache_dir=str(tmp_path / "cache")
    )
    assert isinstance(dataset, datasets.IterableDataset if streaming else datasets.Dataset)
    # Caption files are read row by row (tests/test_data_text_files.py): each caption becomes a list of captions.
    assert_rows_decode_to(dataset, [["cap 0"], ["cap 1"], ["cap 2"], ["absolute"]], [0, 1, 2, 9])


def test_missing_column_names_it_and_lists_the_columns(tmp_path):
    write_table(tmp_path / "c.jsonl", "json", [{"file": "x.png", "text": "t"}])
    with pytest.raises(ValueError, match=r"caption_column='caption'.*\['file', 'text'\]"):
        load_image_text_dataset(str(tmp_path / "c.jsonl"), image_column="file", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=r"image_column='image'.*\['file', 'text'\]"):
        load_image_text_dataset(str(tmp_path / "c.jsonl"), caption_column="text", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="no file matches"):
        load_image_text_dataset(str(tmp_path / "nothing-*.jsonl"))


def write_shard(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("streaming", [False, True])
def test_webdataset_shards(tmp_path, streaming):
    for shard, ks in enumerate(((0, 1, 2), (3, 4))):
        members = []
        for k in ks:
            # Sample 3 is not an image: the iterable policy skips it and reports it with the next sample.
            image = b"GIF89a, or so it claims" if k == 3 else encode(solid(k))
            members += [(f"{k:04d}.png", image), (f"{k:04d}.txt", f"caption {k}".encode())]
        write_shard(tmp_path / f"shard-{shard:02d}.tar", members)
    dataset = load_image_text_dataset(
        str(tmp_path / "shard-{00..01}.tar"), streaming=streaming, cache_dir=str(tmp_path / "cache")
    )
    assert isinstance(dataset, datasets.IterableDataset if streaming else datasets.Dataset)
    rows = list(dataset)
    assert [row["caption"] for row in rows] == [f"caption {k}" for k in range(5)]
    assert rows[0]["image"]["path"].endswith("shard-00.tar/0000.png")
    samples = list(IterableImageTextDataset(dataset, SIZE))
    assert [sample["caption"] for sample in samples] == [f"caption {k}" for k in (0, 1, 2, 4)]
    for k, sample in zip((0, 1, 2, 4), samples):
        assert torch.equal(sample["pixel_values"], expected_pixels(k))
    assert [{k: len(v) for k, v in sample["skipped"].items()} for sample in samples] == [
        {},
        {},
        {},
        {"not_an_image": 1},
    ]
    (record,) = samples[3]["skipped"]["not_an_image"]
    row = 0 if streaming else 3  # a streamed row is named by its shard and its place there
    assert record["row"] == row and record["file"].endswith("shard-01.tar/0003.png") and record["column"] == "image"
    with pytest.raises(BadSampleError, match=rf"not_an_image: row {row} \(.*shard-01.tar/0003.png\), column 'image'"):
        list(IterableImageTextDataset(dataset, SIZE, on_bad_sample="raise"))


def cut(path, member: int, keep: float = 0.5) -> str:
    """Cut the tar file at `path` inside the data of its `member`-th member (`keep` of it stays); returns the name."""
    with tarfile.open(path) as tar:
        info = tar.getmembers()[member]
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: info.offset_data + int(info.size * keep)])
    return info.name


def two_shards(tmp_path) -> str:
    """shard-00.tar holds samples 0-2 and shard-01.tar samples 3-4, each a png and a txt member."""
    for shard, ks in enumerate(((0, 1, 2), (3, 4))):
        members = []
        for k in ks:
            members += [(f"{k:04d}.png", encode(solid(k, size=(40, 30)))), (f"{k:04d}.txt", f"caption {k}".encode())]
        write_shard(tmp_path / f"shard-{shard:02d}.tar", members)
    return str(tmp_path / "shard-{00..01}.tar")


@pytest.mark.parametrize("streaming", [False, True])
def test_a_cut_shard_is_named_its_rest_skipped_and_the_next_shard_read(tmp_path, streaming):
    source = two_shards(tmp_path)
    member = cut(tmp_path / "shard-00.tar", 2)  # inside sample 1's png: sample 0 is whole
    assert member == "0001.png"
    rows = load_image_text_dataset(source, streaming=streaming, cache_dir=str(tmp_path / "cache"))
    dataset = (IterableImageTextDataset if streaming else ImageTextDataset)(rows, SIZE)
    samples = list(dataset) if streaming else [dataset[i] for i in range(len(dataset))]
    assert [sample["caption"] for sample in samples] == ["caption 0", "caption 3", "caption 4"]
    for k, sample in zip((0, 3, 4), samples):
        assert torch.equal(sample["pixel_values"], expected_pixels(k))
    if streaming:  # the shard's record rides with the sample before it
        (record,) = samples[0]["skipped"]["truncated_shard"]
    else:
        (skipped,) = dataset.skipped_rows
        record = skipped.as_dict()
    assert record["reason"] == "truncated_shard" and record["file"].endswith("shard-00.tar")
    assert "0001.png" in record["detail"] and "1 sample" in record["detail"]
    with pytest.raises(BadSampleError, match=r"truncated_shard: .*shard-00.tar"):
        raising = (IterableImageTextDataset if streaming else ImageTextDataset)(rows, SIZE, on_bad_sample="raise")
        list(raising)


@pytest.mark.parametrize("streaming", [False, True])
def test_a_first_shard_cut_before_its_first_sample_and_one_cut_between_members(tmp_path, streaming):
    source = two_shards(tmp_path)
    cut(tmp_path / "shard-00.tar", 0, keep=0.3)  # nothing whole is left: the columns come from shard-01
    with tarfile.open(tmp_path / "shard-01.tar") as tar:
        end = tar.getmembers()[-1]
    with open(tmp_path / "shard-01.tar", "r+b") as f:  # no end-of-archive blocks: cut between two members
        f.truncate(end.offset_data + 512 * ((end.size + 511) // 512))
    rows = load_image_text_dataset(source, streaming=streaming, cache_dir=str(tmp_path / "cache"))
    if streaming:
        samples = list(IterableImageTextDataset(rows, SIZE))
        # shard-00's record rides with the first sample; shard-01's, found after the last, with the last one.
        records = [record for sample in samples for record in sample["skipped"].get("truncated_shard", [])]
        assert [len(sample["skipped"]) for sample in samples] == [1, 1]
    else:
        dataset = ImageTextDataset(rows, SIZE)
        samples = [dataset[i] for i in range(len(dataset))]
        records = [record.as_dict() for record in dataset.skipped_rows]
    assert [sample["caption"] for sample in samples] == ["caption 3", "caption 4"]
    details = {record["file"].rsplit("/", 1)[-1]: record["detail"] for record in records}
    assert set(details) == {"shard-00.tar", "shard-01.tar"} and "end-of-archive" in details["shard-01.tar"]
    assert "0 samples" in details["shard-00.tar"] and "0000.png" in details["shard-00.tar"]


def test_an_image_folder_trains_on_every_image_whatever_its_file_name(tmp_path):
    """`datasets`' imagefolder reads `val`/`train`/`test` in a file name as a split and drops the other files."""
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    names = ["COCO_val2014_000001.jpg", "train_x.jpg", "test-3.png", "plain.png", "sub/val_2.png"]
    with open(folder / "metadata.jsonl", "w") as f:
        for k, name in enumerate(names):
            solid(k).save(folder / name)
            f.write(json.dumps({"file_name": name, "text": f"caption {k}"}) + "\n")
    (folder / "notes.txt").write_text("not an image")
    dataset = load_image_text_dataset(str(folder), caption_column="text", cache_dir=str(tmp_path / "cache"))
    assert sorted(dataset["caption"]) == [f"caption {k}" for k in range(len(names))]


def test_an_image_folder_of_split_folders_gives_the_folder_of_the_split(tmp_path):
    root = tmp_path / "root"
    for split, ks in (("train", (0, 1)), ("validation", (2,))):
        (root / split).mkdir(parents=True)
        with open(root / split / "metadata.jsonl", "w") as f:
            for k in ks:
                solid(k).save(root / split / f"val_{k}.png")  # "val" in every name: the folder decides
                f.write(json.dumps({"file_name": f"val_{k}.png", "text": f"caption {k}"}) + "\n")
    load = lambda split: load_image_text_dataset(
        str(root), split=split, caption_column="text", cache_dir=str(tmp_path / "cache")
    )
    assert sorted(load("train")["caption"]) == ["caption 0", "caption 1"]
    assert load("validation")["caption"] == ["caption 2"]
    with pytest.raises(ValueError, match=r"no folder of split 'test'.*\['train', 'validation'\]"):
        load("test")


@pytest.mark.parametrize("kind", ["tar", "jsonl"])
def test_a_file_named_by_a_brace_list_that_is_missing_is_refused_not_left_out(tmp_path, kind):
    """`shard-{00..02}.tar` with shard-01 gone would train on two thirds of the data without a word."""
    for k in (0, 2):
        if kind == "tar":
            write_shard(tmp_path / f"shard-{k:02d}.{kind}", [(f"{k}.png", encode(solid(k))), (f"{k}.txt", b"a cat")])
        else:
            solid(k).save(tmp_path / f"{k}.png")
            write_table(tmp_path / f"shard-{k:02d}.{kind}", "json", [{"image": f"{k}.png", "caption": "a cat"}])
    with pytest.raises(ValueError, match=r"1 of the 3 files named by .* do not exist: .*shard-01"):
        load_image_text_dataset(str(tmp_path / f"shard-{{00..02}}.{kind}"), cache_dir=str(tmp_path / "cache"))
    glob_pattern = str(tmp_path / f"{{shard-00,nothing-*}}.{kind}")  # a glob matching nothing is missing too
    with pytest.raises(ValueError, match=r"1 of the 2 files named by .* do not exist: .*nothing-\*"):
        load_image_text_dataset(glob_pattern, cache_dir=str(tmp_path / "cache"))


@pytest.mark.parametrize("streaming", [False, True])
def test_a_shard_caption_that_is_not_utf8_is_one_bad_row(tmp_path, streaming):
    """`datasets` decodes `.txt` members strictly: one Latin-1 caption stopped the whole load."""
    members = [("0.png", encode(solid(0))), ("0.txt", "un caf\xe9".encode("latin-1"))]
    members += [("1.png", encode(solid(1))), ("1.txt", b"a dog")]
    write_shard(tmp_path / "s.tar", members)
    rows = load_image_text_dataset(str(tmp_path / "s.tar"), streaming=streaming, cache_dir=str(tmp_path / "cache"))
    dataset = (IterableImageTextDataset if streaming else ImageTextDataset)(rows, SIZE)
    samples = list(dataset) if streaming else [dataset[i] for i in range(len(dataset))]
    assert [sample["caption"] for sample in samples] == ["a dog"]
    (record,) = samples[0]["skipped"]["bad_encoding"] if streaming else [dataset.skipped_rows[0].as_dict()]
    assert record["file"].endswith("s.tar/0.png") and record["column"] == "caption"
    assert "not UTF-8" in record["detail"]
