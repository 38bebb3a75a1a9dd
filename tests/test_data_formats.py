# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Every format CLIP data comes in loads, and a run trains on it: img2dataset shards (a bad first sample
included), `save_to_disk` folders (Dataset and DatasetDict), parquet files and Hub-layout parquet folders, CSV/TSV
files under open_clip's names (separator, image and caption keys, paths relative to the working directory). URLs and
`pipe:` shards are refused with a message saying so. Each format keeps its split and meets the leak check."""

from __future__ import annotations

import io
import json
import os
import tarfile

import datasets
import pytest
from _data_helpers import SIZE, color, encode, solid
from conftest import tiny_tokenizer
from test_run_mcd import TINY_RUN, _load_script

from modeling_mcd.data import ImageTextDataset, IterableImageTextDataset, image_text_dataset, load_image_text_dataset
from modeling_mcd.data.leakage import LeakError, guard_training_data
from modeling_mcd.trainer.arguments import DataArguments

CAPTIONS = ["a red circle", "two blue squares", "a green star", "a big yellow cross", "a small triangle", "a cat"]


def colours(dataset) -> list[tuple[int, ...]]:
    streams = isinstance(dataset, IterableImageTextDataset)
    samples = list(dataset) if streams else [dataset[i] for i in range(len(dataset))]
    return [tuple(int(c) for c in sample["pixel_values"][:, 0, 0]) for sample in samples]


# ---------------------------------------------------------------------------------------------- img2dataset
def write_img2dataset(folder, shards: int = 3, per_shard: int = 4, first_without_caption: bool = True) -> str:
    """img2dataset's output: `{00000..}.tar` of `.jpg`, `.txt` and `.json` members (and its `_stats.json` and
    `.parquet` beside them); sample k shows solid(k). The first sample has no `.txt` when asked."""
    for shard in range(shards):
        with tarfile.open(folder / f"{shard:05d}.tar", "w") as tar:
            for i in range(per_shard):
                k = shard * per_shard + i
                key = f"{shard:05d}{i:04d}"
                caption = CAPTIONS[k % len(CAPTIONS)]
                meta = {"url": f"https://example.com/{k}.jpg", "key": key, "status": "success", "caption": caption}
                members = [("jpg", encode(solid(k, (16, 12)), "JPEG", quality=95)), ("json", json.dumps(meta).encode())]
                if not (first_without_caption and k == 0):
                    members.insert(1, ("txt", caption.encode()))
                for extension, data in members:
                    info = tarfile.TarInfo(f"{key}.{extension}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        (folder / f"{shard:05d}_stats.json").write_text(json.dumps({"successes": per_shard}))
    return str(folder / f"{{00000..{shards - 1:05d}}}.tar")


@pytest.mark.parametrize("streaming", [False, True], ids=["map", "stream"])
def test_img2dataset_shards_skip_a_first_sample_without_caption(tmp_path, streaming):
    source = write_img2dataset(tmp_path)
    rows = load_image_text_dataset(source, streaming=streaming, cache_dir=str(tmp_path / "cache"))
    dataset = image_text_dataset(rows, SIZE)
    assert len(colours(dataset)) == 11  # 12 samples, the first one without its caption
    if streaming:
        (record,) = next(iter(dataset))["skipped"]["missing_value"]
    else:
        (skipped,) = dataset.skipped_rows
        record = skipped.as_dict()
    assert record["column"] == "caption" and "has no .txt member" in record["detail"]
    assert record["file"].endswith("00000.tar/000000000.jpg")


def test_a_member_kind_the_first_samples_lack_is_left_out_and_its_sample_named(tmp_path, monkeypatch, caplog):
    from modeling_mcd.data import shards

    monkeypatch.setattr(shards, "FEATURE_INFERENCE_SAMPLES", 2)  # the columns come from samples 0 and 1 (.jpg)
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        for k, kind in enumerate(["jpg", "jpg", "jpg", "png"]):
            for extension, data in ((kind, encode(solid(k), "PNG" if kind == "png" else "JPEG")), ("txt", b"a cat")):
                info = tarfile.TarInfo(f"{k:04d}.{extension}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    with caplog.at_level("WARNING"):
        rows = load_image_text_dataset(str(tmp_path / "s.tar"), cache_dir=str(tmp_path / "cache"))
    assert "sample 0003 has members ['png'] that the first samples of the shards lack" in caplog.text
    assert rows["bad_reason"] == [None, None, None, "missing_value"]
    assert "has no .jpg member" in rows["bad_detail"][3]


def test_a_missing_named_shard_is_named(tmp_path):
    write_img2dataset(tmp_path)
    os.remove(tmp_path / "00001.tar")
    with pytest.raises(ValueError, match=r"1 of the 3 files named by .* do not exist: .*00001\.tar"):
        load_image_text_dataset(str(tmp_path / "{00000..00002}.tar"))


@pytest.mark.parametrize("source", ["pipe:curl -s https://x/{000..009}.tar", "https://x.org/shards/{000..009}.tar"])
def test_remote_and_pipe_shards_are_refused_saying_so(source):
    with pytest.raises(ValueError, match=r"remote files and shards \(URLs, pipe: commands\) are not read"):
        load_image_text_dataset(source, streaming=True)


# --------------------------------------------------------------------------------------- parquet, save_to_disk
SPLITS = ["train", "test", "train", "validation", "train", None, "train", "test"]


def table(ks) -> datasets.Dataset:
    """Rows k of `ks`: solid(k) as embedded bytes (an `Image` column), a caption, the split of `SPLITS`."""
    features = datasets.Features(
        {"image": datasets.Image(), "caption": datasets.Value("string"), "split": datasets.Value("string")}
    )
    rows = {
        "image": [{"bytes": encode(solid(k)), "path": None} for k in ks],
        "caption": [CAPTIONS[k % len(CAPTIONS)] for k in ks],
        "split": [SPLITS[k] for k in ks],
    }
    return datasets.Dataset.from_dict(rows, features=features)


def by_split(name):
    return [k for k, split in enumerate(SPLITS) if split == name]


def write_hub_parquet(folder) -> str:
    """The Hub layout: `data/train-0000k-of-00002.parquet` and `data/test-00000-of-00001.parquet`, a README."""
    (folder / "data").mkdir(parents=True)
    train = by_split("train")
    table(train[:2]).to_parquet(folder / "data" / "train-00000-of-00002.parquet")
    table(train[2:]).to_parquet(folder / "data" / "train-00001-of-00002.parquet")
    table(by_split("test")).to_parquet(folder / "data" / "test-00000-of-00001.parquet")
    table(by_split("validation")).to_parquet(folder / "data" / "validation-00000-of-00001.parquet")
    (folder / "README.md").write_text("---\nlicense: mit\n---\n")
    return str(folder)


@pytest.mark.parametrize("streaming", [False, True], ids=["map", "stream"])
def test_a_hub_layout_parquet_folder_takes_its_splits_from_the_file_names(tmp_path, streaming):
    source = write_hub_parquet(tmp_path / "hub")
    cache = str(tmp_path / "cache")
    for split, expected in (("train", by_split("train")), ("test", by_split("test")), ("val", by_split("validation"))):
        rows = load_image_text_dataset(source, split=split, streaming=streaming, cache_dir=cache)
        assert sorted(colours(image_text_dataset(rows, SIZE))) == sorted(color(k) for k in expected), split
    with pytest.raises(ValueError, match=r"has no split 'extra': its splits are \['test', 'train', 'validation'\]"):
        load_image_text_dataset(source, split="extra", cache_dir=cache)


def test_parquet_files_are_one_table_whose_split_column_decides(tmp_path):
    table(range(len(SPLITS))).to_parquet(tmp_path / "all.parquet")
    for split, expected in (("train", by_split("train") + by_split(None)), ("test", by_split("test"))):
        rows = load_image_text_dataset(str(tmp_path / "*.parquet"), split=split, cache_dir=str(tmp_path / "c"))
        assert sorted(colours(image_text_dataset(rows, SIZE))) == sorted(color(k) for k in expected), split


@pytest.mark.parametrize("streaming", [False, True], ids=["map", "stream"])
def test_save_to_disk_folders_of_a_dataset_and_of_a_dataset_dict(tmp_path, streaming):
    table(range(len(SPLITS))).save_to_disk(str(tmp_path / "one"))
    rows = load_image_text_dataset(str(tmp_path / "one"), split="test", streaming=streaming)
    assert sorted(colours(image_text_dataset(rows, SIZE))) == sorted(color(k) for k in by_split("test"))
    splits = datasets.DatasetDict({"train": table([0, 2, 4, 5]), "validation": table([3])})
    splits.save_to_disk(str(tmp_path / "dict"))
    rows = load_image_text_dataset(str(tmp_path / "dict"), split="train", streaming=streaming)
    assert sorted(colours(image_text_dataset(rows, SIZE))) == sorted(color(k) for k in (0, 2, 4, 5))
    rows = load_image_text_dataset(str(tmp_path / "dict"), split="val", streaming=streaming)
    assert colours(image_text_dataset(rows, SIZE)) == [color(3)]
    with pytest.raises(ValueError, match=r"has no split 'test': its splits are \['train', 'validation'\]"):
        load_image_text_dataset(str(tmp_path / "dict"), split="test")


def test_the_leak_check_sees_images_held_as_bytes_in_a_table(tmp_path):
    table(range(len(SPLITS))).save_to_disk(str(tmp_path / "one"))
    train = image_text_dataset(load_image_text_dataset(str(tmp_path / "one")), SIZE)
    with pytest.raises(LeakError, match="shares 1 image"):  # row 4 trains: an evaluation set must not hold it
        guard_training_data(train, {"retrieval": [encode(solid(4))]})
    guard_training_data(train, {"retrieval": [encode(solid(1))]})  # row 1 is a test row: not trained on


# ------------------------------------------------------------------------------------------------- CSV/TSV
def write_open_clip_tsv(folder, name: str = "train.tsv", separator: str = "\t") -> str:
    """open_clip's CSV: `filepath` and `title` columns, tab-separated, paths relative to where training runs."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = [separator.join(["filepath", "title"])]
    for k in range(6):
        solid(k).save(folder / "images" / f"{k}.png")
        lines.append(separator.join([f"images/{k}.png", f'{CAPTIONS[k]}, "quoted" in the middle']))
    (folder / "lists").mkdir(exist_ok=True)
    (folder / "lists" / name).write_text("\n".join(lines) + "\n")
    return str(folder / "lists" / name)


def test_tsv_and_separators_with_open_clip_keys_and_paths_from_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = write_open_clip_tsv(tmp_path)
    columns = {"image_column": "filepath", "caption_column": "title"}
    rows = load_image_text_dataset(source, paths_relative_to="cwd", **columns)
    dataset = ImageTextDataset(rows, SIZE)
    assert colours(dataset) == [color(k) for k in range(6)] and dataset.skipped_rows == []
    assert dataset[0]["caption"] == 'a red circle, "quoted" in the middle'
    # Relative to the file's folder (the default), lists/images/0.png does not exist: every row is skipped.
    assert set(load_image_text_dataset(source, **columns)["bad_reason"]) == {"missing_file"}
    semicolons = write_open_clip_tsv(tmp_path, "train.csv", separator=";")
    rows = load_image_text_dataset(semicolons, paths_relative_to="cwd", csv_separator=";", **columns)
    assert len(ImageTextDataset(rows, SIZE)) == 6
    with pytest.raises(ValueError, match=r"separated by ',': --csv_separator\?"):
        load_image_text_dataset(semicolons, **columns)
    assert len(load_image_text_dataset(source, paths_relative_to="cwd", csv_separator="\\t", **columns)) == 6


def test_open_clip_key_names_are_aliases_that_must_agree():
    args = DataArguments(csv_img_key="filepath", csv_caption_key="title", csv_separator="\\t")
    assert (args.image_column, args.caption_column) == ("filepath", "title")
    assert DataArguments(image_column="filepath", csv_img_key="filepath").image_column == "filepath"
    with pytest.raises(ValueError, match="--csv_img_key is open_clip's name for --image_column: give one"):
        DataArguments(image_column="path", csv_img_key="filepath")
    with pytest.raises(ValueError, match="--csv_separator must be one character"):
        DataArguments(csv_separator=";;")


# ------------------------------------------------------------------------------------ two steps on each format
def _train_two_steps(tmp_path, dataset: str, *flags: str) -> str:
    run_mcd = _load_script()
    tiny_tokenizer().save_pretrained(tmp_path / "tokenizer")
    out = tmp_path / "out"
    run_mcd.main(
        [*TINY_RUN, "--dataset", dataset, "--eval_synthetic", "false", "--max_steps", "2", "--output_dir", str(out)]
        + ["--per_device_train_batch_size", "4", "--tokenizer_name_or_path", str(tmp_path / "tokenizer"), *flags]
    )
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and (out / "mcd-model" / "model.safetensors").is_file()
    return (out / "skipped_samples.jsonl").read_text() if (out / "skipped_samples.jsonl").is_file() else ""


@pytest.mark.slow
@pytest.mark.parametrize("streaming", ["false", "true"], ids=["map", "stream"])
def test_two_steps_on_img2dataset_shards_with_a_bad_first_sample(tmp_path, streaming):
    skipped = _train_two_steps(tmp_path, write_img2dataset(tmp_path), "--streaming", streaming)
    assert "has no .txt member" in skipped  # the first sample: skipped as any other, listed with the run


@pytest.mark.slow
def test_two_steps_on_a_dataset_dict_saved_to_disk(tmp_path):
    datasets.DatasetDict({"train": table(range(8)), "test": table([1])}).save_to_disk(str(tmp_path / "saved"))
    _train_two_steps(tmp_path, str(tmp_path / "saved"), "--split_column", "")


@pytest.mark.slow
def test_two_steps_on_a_hub_layout_parquet_folder(tmp_path):
    _train_two_steps(tmp_path, write_hub_parquet(tmp_path / "hub"), "--streaming", "true")


@pytest.mark.slow
def test_two_steps_on_an_open_clip_tsv(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = write_open_clip_tsv(tmp_path)
    flags = ["--csv_img_key", "filepath", "--csv_caption_key", "title", "--paths_relative_to", "cwd"]
    assert _train_two_steps(tmp_path, source, *flags) == ""  # every row found


@pytest.mark.slow
def test_two_steps_on_parquet_files(tmp_path):
    table(range(len(SPLITS))).to_parquet(tmp_path / "part-0.parquet")
    table(range(len(SPLITS))).to_parquet(tmp_path / "part-1.parquet")
    _train_two_steps(tmp_path, str(tmp_path / "part-*.parquet"))  # 2 x 4 training rows (split column)


@pytest.mark.slow
def test_two_steps_on_a_dataset_saved_to_disk(tmp_path):
    table(list(range(len(SPLITS))) * 2).save_to_disk(str(tmp_path / "saved"))
    _train_two_steps(tmp_path, str(tmp_path / "saved"))


@pytest.mark.slow
def test_two_steps_on_a_semicolon_separated_csv(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = write_open_clip_tsv(tmp_path, "train.csv", separator=";")
    flags = ["--csv_img_key", "filepath", "--csv_caption_key", "title", "--paths_relative_to", "cwd"]
    assert _train_two_steps(tmp_path, source, *flags, "--csv_separator", ";") == ""
