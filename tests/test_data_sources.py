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

from modeling_mcd.data import (
    BadSampleError,
    ImageTextDataset,
    IterableImageTextDataset,
    decode_image,
    expand_braces,
    load_image_text_dataset,
)

from _data_helpers import SIZE, color, encode, expected_pixels, solid, write_table


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
    assert record["row"] == 3 and record["file"].endswith("shard-01.tar/0003.png") and record["column"] == "image"
    with pytest.raises(BadSampleError, match=r"not_an_image: row 3 \(.*shard-01.tar/0003.png\), column 'image'"):
        list(IterableImageTextDataset(dataset, SIZE, on_bad_sample="raise"))
