# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Tests of modeling_mcd.data: loaders, decoding, the bad-sample policy and the collator.

Every fixture is made here in tmp dirs: tiny images written with PIL, a WordPiece tokenizer built from
a vocab list. Nothing is downloaded.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import tarfile
from collections import Counter

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import BertTokenizer, DataCollatorForLanguageModeling

from modeling_mcd.data import (
    BAD_SAMPLE_REASONS,
    BadSampleCounter,
    BadSampleError,
    ImageTextDataset,
    IterableImageTextDataset,
    MCDCollator,
    decode_image,
    expand_braces,
    image_text_dataset,
    load_image_text_dataset,
    resize_center_crop,
    select_caption,
    validate_caption,
)

SIZE = 7  # odd base size
WORDS = "a an the photo picture of cat dog bird red green blue small big on under mat tree sky sits runs".split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizer(vocab={token: i for i, token in enumerate(SPECIALS + WORDS)})


def color(k: int) -> tuple[int, int, int]:
    """A distinct solid colour per good image, so a returned sample tells which row it came from."""
    return (10 * k % 256, 255 - 10 * k % 256, 3 * k % 256)


def solid(k: int, size=(11, 9)) -> Image.Image:
    return Image.new("RGB", size, color(k))


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def expected_pixels(k: int) -> torch.Tensor:
    return torch.tensor(color(k), dtype=torch.uint8).view(3, 1, 1).expand(3, SIZE, SIZE)


def write_bad_files(directory) -> dict[str, str]:
    """One file per image failure kind; returns reason -> path."""
    os.makedirs(directory, exist_ok=True)
    png = bytearray(encode(Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8))))
    for i in range(60, len(png) - 20):  # keep the header, scramble the compressed data
        png[i] ^= 0x5A
    jpeg = encode(Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)), "JPEG")
    # The header claims 3000 x 3000 pixels but the data is cut: only a header-first check names it a bomb.
    bomb = encode(Image.new("L", (3000, 3000)))[:200]
    contents = {
        "corrupt": bytes(png),
        "truncated": jpeg[: len(jpeg) // 2],
        "empty_file": b"",
        "not_an_image": b"this is a caption file, not a picture\n",
        "decompression_bomb": bomb,
    }
    names = {"corrupt": "corrupt.png", "truncated": "cut.jpg", "empty_file": "zero.jpg", "not_an_image": "text.jpg"}
    paths = {}
    for reason, data in contents.items():
        path = os.path.join(directory, names.get(reason, "bomb.png"))
        with open(path, "wb") as f:
            f.write(data)
        paths[reason] = path
    paths["missing_file"] = os.path.join(directory, "missing.jpg")
    return paths


def good_and_bad_rows(directory):
    """Rows with isolated bad samples of every kind; returns rows and {row index: reason}."""
    bad_files = write_bad_files(os.path.join(directory, "bad"))
    bad_rows = [(bad_files[reason], "a photo", reason) for reason in sorted(bad_files)]
    bad_rows += [(None, "", "empty_caption"), (None, None, "non_text_caption"), (None, 7, "non_text_caption")]
    rows, bad = [], {}
    for k in range(2 * len(bad_rows) + 1):
        if k % 2 == 1:  # bad rows at odd indices: never two in a row
            path, caption, reason = bad_rows[k // 2]
            if path is None:
                path = os.path.join(directory, f"good{k}.png")
                solid(k).save(path)
            rows.append({"image": path, "caption": caption})
            bad[k] = reason
        else:
            path = os.path.join(directory, f"good{k}.png")
            solid(k).save(path)
            rows.append({"image": path, "caption": f"the {WORDS[k % len(WORDS)]} photo"})
    return rows, bad


# ---------------------------------------------------------------------------------------------- loading


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


def write_table(path, kind, rows):
    with open(path, "w", newline="") as f:
        if kind == "json":
            f.writelines(json.dumps(row) + "\n" for row in rows)
        else:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


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
    assert_rows_decode_to(dataset, ["cap 0", "cap 1", "cap 2", "absolute"], [0, 1, 2, 9])


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
    assert [sample["skipped"] for sample in samples] == [{}, {}, {}, {"not_an_image": 1}]
    with pytest.raises(BadSampleError, match=r"sample 3 of the stream \(.*shard-01.tar/0003.png\)"):
        list(IterableImageTextDataset(dataset, SIZE, on_bad_sample="raise"))


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


# ---------------------------------------------------------------------------------------------- decoding


def rgb(image: Image.Image, via_png: bool) -> np.ndarray:
    value = encode(image) if via_png else image
    decoded = decode_image(value)
    assert decoded.mode == "RGB"
    return np.asarray(decoded)


@pytest.mark.parametrize("via_png", [False, True])
def test_mode_conversions(via_png):
    gray = np.array([[0, 100, 255]], dtype=np.uint8)
    assert np.array_equal(rgb(Image.fromarray(gray, "L"), via_png), np.repeat(gray[..., None], 3, -1))

    # 16-bit: 0 -> 0, 257 * 100 -> 100, 65535 -> 255 (PIL's own conversion would clip 25700 to 255).
    sixteen = np.array([[0, 25700, 65535]], dtype=np.uint16)
    images = [Image.fromarray(sixteen)] + ([] if via_png else [Image.fromarray(sixteen.astype(np.int32), "I")])
    for image in images:
        assert image.mode in ("I;16", "I")
        assert rgb(image, via_png)[0, :, 0].tolist() == [0, 100, 255]

    # Alpha is composited on white: out = a * c + (1 - a) * 255.
    rgba = np.array([[[200, 10, 50, 255], [200, 10, 50, 0], [200, 10, 50, 128]]], dtype=np.uint8)
    alpha = rgba[..., 3:] / 255.0
    naive = np.rint(rgba[..., :3] * alpha + 255 * (1 - alpha))
    assert np.abs(rgb(Image.fromarray(rgba, "RGBA"), via_png).astype(int) - naive).max() <= 1
    la = Image.fromarray(rgba[..., [0, 3]], "LA")
    naive_la = np.rint(rgba[..., 0] * alpha[..., 0] + 255 * (1 - alpha[..., 0]))
    assert np.abs(rgb(la, via_png)[..., 0].astype(int) - naive_la).max() <= 1

    palette = Image.new("P", (3, 1))
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (253 * 3))
    palette.putdata([0, 1, 2])
    assert rgb(palette, via_png).tolist() == [[[255, 0, 0], [0, 255, 0], [0, 0, 255]]]
    palette.info["transparency"] = 1  # palette index 1 is transparent -> white
    assert rgb(palette, via_png).tolist() == [[[255, 0, 0], [255, 255, 255], [0, 0, 255]]]

    if not via_png:  # PNG has no CMYK nor float modes
        cmyk = Image.new("CMYK", (2, 1))
        cmyk.putdata([(0, 0, 0, 0), (255, 0, 0, 0)])  # no ink -> white; full cyan -> (0, 255, 255)
        assert rgb(cmyk, False).tolist() == [[[255, 255, 255], [0, 255, 255]]]
        floats = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F")
        assert rgb(floats, False)[0, :, 0].tolist() == [0, 128, 255]
        binary = Image.fromarray(gray, "L").convert("1", dither=Image.Dither.NONE)  # threshold at 128
        assert rgb(binary, False)[0, :, 0].tolist() == [0, 0, 255]


def test_decode_accepts_every_input_kind(tmp_path):
    path = tmp_path / "x.png"
    solid(3).save(path)
    data = path.read_bytes()
    as_dicts = ({"bytes": data, "path": "x.png"}, {"bytes": None, "path": str(path)})
    for value in (solid(3), data, str(path), path, *as_dicts):
        assert decode_image(value).getpixel((0, 0)) == color(3)


def test_resize_center_crop_matches_a_naive_crop():
    # A 12 x 8 image (W x H): the shorter side is already 8, so a size-8 result is the centre crop.
    array = np.random.default_rng(0).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    out = resize_center_crop(Image.fromarray(array), 8)
    assert out.dtype == torch.uint8 and out.shape == (3, 8, 8)
    assert torch.equal(out, torch.from_numpy(array[:, 2:10]).permute(2, 0, 1))
    assert resize_center_crop(solid(5, (30, 17)), SIZE).shape == (3, SIZE, SIZE)


def test_every_bad_image_kind_is_named(tmp_path):
    paths = write_bad_files(tmp_path)
    for reason, path in paths.items():
        with pytest.raises(BadSampleError) as error:
            decode_image(path, max_pixels=1_000_000)
        assert error.value.reason == reason, (reason, error.value)
        assert os.path.basename(path) in str(error.value)
        assert isinstance(error.value, ValueError)
    # The bomb is refused from its header; without the limit the same bytes fail as a truncated file.
    with pytest.raises(BadSampleError) as error:
        decode_image(paths["decompression_bomb"], max_pixels=None)
    assert error.value.reason == "truncated"


def test_pil_decompression_bomb_is_mapped(monkeypatch):
    data = encode(Image.new("L", (100, 100)))
    for limit in (6000, 4000):  # 10000 pixels: PIL warns above its limit, raises above twice the limit
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        with pytest.raises(BadSampleError) as error:
            decode_image(data, max_pixels=None)
        assert error.value.reason == "decompression_bomb"


def test_validate_caption():
    assert validate_caption("  a red cat \n") == "a red cat"
    cases = [("", "empty_caption"), (" \t\n", "empty_caption")]
    cases += [(value, "non_text_caption") for value in (None, 3, 2.5, b"bytes")]
    for value, reason in cases:
        with pytest.raises(BadSampleError) as error:
            validate_caption(value)
        assert error.value.reason == reason


# ---------------------------------------------------------------------------------------------- policy


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


def test_bad_sample_counter():
    counter = BadSampleCounter()
    assert counter.total == 0 and counter.summary() == "0 bad samples skipped"
    for skipped in ({"corrupt": 2}, {}, {"missing_file": 1, "corrupt": 1}, {"empty_caption": 0}):
        counter.update(skipped)
    assert counter.as_dict() == {"corrupt": 3, "missing_file": 1}
    assert counter.summary() == "4 bad samples skipped (corrupt=3, missing_file=1)"


# ---------------------------------------------------------------------------------------------- collator


def random_captions(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(1, 45))) for _ in range(n)]


def examples_for(captions):
    return [{"pixel_values": expected_pixels(k), "caption": c, "skipped": {}} for k, c in enumerate(captions)]


def test_collator_shapes_dtypes_and_truncation(tokenizer):
    captions = ["a cat", "the big red dog sits on the mat under the blue sky " * 3, "bird"]
    batch = MCDCollator(tokenizer, max_length=9)(examples_for(captions))
    assert batch["pixel_values"].dtype == torch.uint8 and batch["pixel_values"].shape == (3, 3, SIZE, SIZE)
    reference = tokenizer(captions, truncation=True, max_length=9, padding="longest", return_tensors="pt")
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(batch[key], reference[key])
    assert batch["input_ids"].shape == (3, 9)
    assert batch["input_ids"][1, -1] == tokenizer.sep_token_id  # truncated, still closed by [SEP]
    assert batch["mlm_input_ids"].shape == batch["mlm_labels"].shape == (3, 9)
    assert batch["bad_samples"] == {}

    padded = MCDCollator(tokenizer, max_length=12, pad_to_multiple_of=4)(examples_for(captions[::2]))
    assert padded["input_ids"].shape == (2, 4) and padded["mlm_input_ids"].shape == (2, 4)
    with pytest.raises(ValueError, match="pad_to_multiple_of"):
        MCDCollator(tokenizer, max_length=9, pad_to_multiple_of=4)

    plain = MCDCollator(tokenizer, mlm_probability=0.0)(examples_for(captions))
    assert "mlm_input_ids" not in plain and "mlm_labels" not in plain
    with pytest.raises(ValueError, match="mlm_probability"):
        MCDCollator(tokenizer, mlm_probability=1.5)
    with pytest.raises(ValueError, match="pixel_values"):
        MCDCollator(tokenizer)([examples_for(["a"])[0], {"pixel_values": torch.zeros(3, 2, 2), "caption": "b"}])


def test_collator_masks_exactly_like_transformers(tokenizer):
    captions = random_captions(13, seed=1)
    ours = MCDCollator(tokenizer, max_length=17, seed=5)(examples_for(captions))
    features = tokenizer(captions, truncation=True, max_length=17, return_special_tokens_mask=True)
    peer = DataCollatorForLanguageModeling(tokenizer, seed=5)(
        [{"input_ids": ids, "special_tokens_mask": mask}
         for ids, mask in zip(features["input_ids"], features["special_tokens_mask"])]
    )
    assert (peer["labels"] != -100).sum() > 5  # the comparison covers real masking
    assert torch.equal(ours["mlm_input_ids"], peer["input_ids"])
    assert torch.equal(ours["mlm_labels"], peer["labels"])


def test_collator_mlm_statistics(tokenizer):
    batch = MCDCollator(tokenizer, max_length=32, seed=0)(examples_for(random_captions(600, seed=2)))
    ids, mlm_ids, labels = batch["input_ids"], batch["mlm_input_ids"], batch["mlm_labels"]
    specials = torch.isin(ids, torch.tensor(tokenizer.all_special_ids))
    eligible = batch["attention_mask"].bool() & ~specials
    selected = labels != -100
    assert not (selected & ~eligible).any()  # never [CLS], [SEP] or padding
    assert (batch["attention_mask"] == 0).any() and (ids[~eligible] == mlm_ids[~eligible]).all()
    assert abs(selected.sum() / eligible.sum() - 0.15) < 0.02
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(mlm_ids[~selected], ids[~selected])
    to_mask = (mlm_ids[selected] == tokenizer.mask_token_id).float().mean()
    to_random = (mlm_ids[selected] != tokenizer.mask_token_id) & (mlm_ids[selected] != ids[selected])
    assert abs(to_mask - 0.8) < 0.04
    assert abs(to_random.float().mean() - 0.1 * (1 - 1 / len(tokenizer))) < 0.03
