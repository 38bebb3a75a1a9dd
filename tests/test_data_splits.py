# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""No training path reads an evaluation split, and an evaluation image in the training data stops the run.

Every loader (jsonl, csv, tsv, parquet, save_to_disk, imagefolder, webdataset, the Hub loader) is given one file
holding train, val and test rows (plus rows naming no split); each test checks which rows come back by their
images' colours. Then the leak check:
by path, by content under another name, by pixels for decoded images, and in a stream as it is read. Finally
`--caption_noise`: exactly the drawn rows change, to another image's caption, the same for every objective.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tarfile
from collections import Counter

import datasets
import pytest
from _data_helpers import SIZE, color, encode, solid
from PIL import Image

from modeling_mcd.data import image_text_dataset, load_image_text_dataset
from modeling_mcd.data.lazy_images import LazyImages
from modeling_mcd.data.leakage import ImageKeys, LeakError, check_no_leaks, guard_training_data
from modeling_mcd.data.noise import mislabel_captions

# Row k shows solid(k); its split. Row 7 names no split: a training row.
SPLITS = ["train", "val", "train", "test", "train", "val", "test", None, "train"]
TRAIN = [k for k, split in enumerate(SPLITS) if split in ("train", None)]


def _write_images(folder):
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for k in range(len(SPLITS)):
        solid(k).save(folder / "images" / f"{k}.png")


def _row(k):
    row = {"file_name": f"images/{k}.png", "caption": f"picture {k}"}
    if SPLITS[k] is not None:
        row["split"] = SPLITS[k]
    return row


def write_jsonl(folder, name="captions.jsonl"):
    _write_images(folder)
    path = folder / name
    path.write_text("".join(json.dumps(_row(k)) + "\n" for k in range(len(SPLITS))))
    return path


def write_csv(folder):
    _write_images(folder)
    path = folder / "captions.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "caption", "split"])
        for k in range(len(SPLITS)):
            writer.writerow([f"images/{k}.png", f"picture {k}", SPLITS[k] or ""])
    return path


def write_tsv(folder):
    _write_images(folder)
    path = folder / "captions.tsv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(["file_name", "caption", "split"])
        for k in range(len(SPLITS)):
            writer.writerow([f"images/{k}.png", f"picture {k}", SPLITS[k] or ""])
    return path


def _table():
    """The rows as a `datasets` table: images embedded as bytes, the split a column like any other."""
    features = datasets.Features(
        {"image": datasets.Image(), "caption": datasets.Value("string"), "split": datasets.Value("string")}
    )
    rows = {
        "image": [{"bytes": encode(solid(k)), "path": None} for k in range(len(SPLITS))],
        "caption": [f"picture {k}" for k in range(len(SPLITS))],
        "split": SPLITS,
    }
    return datasets.Dataset.from_dict(rows, features=features)


def write_parquet(folder):
    _table().to_parquet(folder / "rows.parquet")
    return folder / "rows.parquet"


def write_saved(folder):
    _table().save_to_disk(str(folder / "saved"))
    return folder / "saved"


def write_imagefolder(folder):
    _write_images(folder)
    rows = [{**_row(k), "split": SPLITS[k]} for k in range(len(SPLITS))]  # the folder's metadata must be uniform
    (folder / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def write_shard(folder):
    path = folder / "shard-000.tar"
    with tarfile.open(path, "w") as tar:
        for k in range(len(SPLITS)):
            members = {"png": encode(solid(k)), "txt": f"picture {k}".encode(), "json": json.dumps(_row(k)).encode()}
            for extension, data in members.items():
                info = tarfile.TarInfo(f"{k:04d}.{extension}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def colours(rows) -> list[tuple[int, ...]]:
    """The colour of each sample's image: which row it is."""
    dataset = image_text_dataset(rows, SIZE)
    return [tuple(int(c) for c in sample["pixel_values"][:, 0, 0]) for sample in dataset]


def expected(split):
    rows = TRAIN if split == "train" else [k for k, name in enumerate(SPLITS) if name == split]
    return [color(k) for k in rows]


LOADERS = {
    "jsonl": lambda folder: (str(write_jsonl(folder)), {"image_column": "file_name"}),
    "csv": lambda folder: (str(write_csv(folder)), {"image_column": "file_name"}),
    "tsv": lambda folder: (str(write_tsv(folder)), {"image_column": "file_name"}),
    "parquet": lambda folder: (str(write_parquet(folder)), {}),
    "save_to_disk": lambda folder: (str(write_saved(folder)), {}),
    "imagefolder": lambda folder: (str(write_imagefolder(folder)), {}),
    "webdataset": lambda folder: (str(write_shard(folder)), {}),
}


@pytest.mark.parametrize("streaming", [False, True], ids=["map", "stream"])
@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_each_loader_keeps_exactly_the_rows_of_the_split(kind, streaming, tmp_path):
    source, columns = LOADERS[kind](tmp_path)
    cache = {"cache_dir": str(tmp_path / "cache")}
    for split in ("train", "val", "test"):
        if kind in ("imagefolder", "webdataset") and split != "train":
            continue  # these loaders name every local file "train": their other splits come from the column only
        rows = load_image_text_dataset(source, split=split, streaming=streaming, **columns, **cache)
        assert sorted(colours(rows)) == sorted(expected(split)), (kind, split)
    # The column is what decides: read under another name, the same rows are all training rows.
    if kind in ("jsonl", "csv", "tsv"):
        rows = load_image_text_dataset(source, split="train", split_column=None, **columns, **cache)
        assert len(colours(rows)) == len(SPLITS)


@pytest.mark.parametrize("kind", ["imagefolder", "webdataset"])
def test_folder_and_shard_rows_that_name_another_split_are_left_out(kind, tmp_path):
    # A loaded split whose rows say they belong to val or test: only the rows saying "train" (or nothing) stay.
    source, columns = LOADERS[kind](tmp_path)
    rows = load_image_text_dataset(source, split="train", cache_dir=str(tmp_path / "c"), **columns)
    assert sorted(colours(rows)) == sorted(expected("train"))


def test_the_hub_loader_filters_a_split_column_too(tmp_path, monkeypatch):
    images = [{"bytes": encode(solid(k)), "path": None} for k in range(len(SPLITS))]
    table = datasets.Dataset.from_dict(
        {"image": images, "caption": [f"c {k}" for k in range(len(SPLITS))], "split": SPLITS},
        features=datasets.Features(
            {"image": datasets.Image(), "caption": datasets.Value("string"), "split": datasets.Value("string")}
        ),
    )
    asked = []

    def fake_load_dataset(name, split, streaming=False, **kwargs):
        asked.append((name, split))
        return table

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    rows = load_image_text_dataset("org/pairs", split="train")
    assert asked == [("org/pairs", "train")]
    # Rows without a value belong to the split the Hub gave: "train" here.
    assert sorted(colours(rows)) == sorted(expected("train"))


def test_the_kept_and_dropped_counts_are_logged_and_an_empty_split_is_an_error(tmp_path, caplog):
    path = write_jsonl(tmp_path)
    with caplog.at_level("WARNING"):
        rows = load_image_text_dataset(str(path), split="train", image_column="file_name")
    assert len(rows) == len(TRAIN)
    message = next(record.getMessage() for record in caplog.records if "keeps" in record.getMessage())
    counts = Counter(split or "train" for split in SPLITS)
    assert f"keeps {len(TRAIN)} of {len(SPLITS)} rows" in message
    assert f"test {counts['test']}" in message and f"val {counts['val']}" in message
    with pytest.raises(ValueError, match=r"no row of split 'holdout'.*test 2.*train 5.*val 2"):
        load_image_text_dataset(str(path), split="holdout", image_column="file_name")
    # Names `datasets` takes for one split are one split: `validation` (or `dev`) keeps the `val` rows.
    assert len(load_image_text_dataset(str(path), split="validation", image_column="file_name")) == counts["val"]


def test_rows_of_a_file_without_a_split_column_are_all_training_rows(tmp_path):
    _write_images(tmp_path)
    path = tmp_path / "plain.jsonl"
    path.write_text("".join(json.dumps({"file_name": f"images/{k}.png", "caption": "x"}) + "\n" for k in range(4)))
    assert len(load_image_text_dataset(str(path), image_column="file_name")) == 4
    with pytest.raises(ValueError, match="no row of split 'val'"):
        load_image_text_dataset(str(path), split="val", image_column="file_name")


def test_a_custom_split_column_and_train_split_name(tmp_path):
    _write_images(tmp_path)
    path = tmp_path / "c.jsonl"
    names = ["fit", "holdout", "fit", None]
    path.write_text(
        "".join(
            json.dumps({"file_name": f"images/{k}.png", "caption": "x", **({"part": n} if n else {})}) + "\n"
            for k, n in enumerate(names)
        )
    )
    rows = load_image_text_dataset(
        str(path), split="fit", split_column="part", train_split="fit", image_column="file_name"
    )
    assert sorted(colours(rows)) == sorted(color(k) for k in (0, 2, 3))


# ------------------------------------------------------------------------------------------------- leaks
def _train(tmp_path, split_column="split"):
    path = write_jsonl(tmp_path)
    rows = load_image_text_dataset(str(path), image_column="file_name", split_column=split_column)
    return image_text_dataset(rows, SIZE)


def test_an_evaluation_set_of_the_test_split_passes_when_training_keeps_its_split(tmp_path):
    train = _train(tmp_path)
    test_images = LazyImages([tmp_path / "images" / f"{k}.png" for k, s in enumerate(SPLITS) if s == "test"])
    guard_training_data(train, {"flickr_retrieval": test_images})  # no error


def test_training_on_the_whole_file_is_refused_naming_the_count_and_paths(tmp_path):
    train = _train(tmp_path, split_column=None)
    test = [k for k, s in enumerate(SPLITS) if s == "test"]
    with pytest.raises(LeakError, match=rf"'flickr_retrieval' shares {len(test)} image") as error:
        guard_training_data(train, {"flickr_retrieval": LazyImages([tmp_path / "images" / f"{k}.png" for k in test])})
    for k in test:
        assert f"{k}.png" in str(error.value)


def test_a_copy_under_another_name_is_found_by_content(tmp_path):
    train = _train(tmp_path)
    shutil.copy(tmp_path / "images" / "0.png", tmp_path / "renamed.png")  # row 0 is a training row
    with pytest.raises(LeakError, match="shares 1 image"):
        guard_training_data(train, {"zs": LazyImages([tmp_path / "renamed.png"])})


def test_decoded_evaluation_images_are_matched_by_pixels(tmp_path):
    train = _train(tmp_path)
    decoded = [solid(2), Image.new("RGB", (11, 9), (1, 2, 3))]  # row 2 trains; the other image is new
    with pytest.raises(LeakError, match="shares 1 image"):
        guard_training_data(train, {"synthetic_zero_shot": decoded})
    guard_training_data(train, {"synthetic_zero_shot": decoded[1:]})


def test_a_stream_stops_at_the_first_evaluation_image(tmp_path):
    path = write_jsonl(tmp_path)
    stream = image_text_dataset(
        load_image_text_dataset(str(path), image_column="file_name", split_column=None, streaming=True), SIZE
    )
    guard_training_data(stream, {"retrieval": LazyImages([tmp_path / "images" / "3.png"])})
    samples = iter(stream)
    for _ in range(3):  # rows 0, 1, 2 pass
        next(samples)
    with pytest.raises(LeakError, match="3.png"):
        next(samples)


def test_image_keys_match_only_what_they_hold(tmp_path):
    _write_images(tmp_path)
    keys = ImageKeys.of("set", LazyImages([tmp_path / "images" / "1.png"]))
    assert keys.match(str(tmp_path / "images" / "1.png")) is not None
    assert keys.match({"bytes": encode(solid(1)), "path": "elsewhere/x.png"}) is not None
    assert keys.match(str(tmp_path / "images" / "2.png")) is None
    check_no_leaks([str(tmp_path / "images" / "2.png")], [keys])


# ------------------------------------------------------------------------------------------ caption noise
def _rows(n, bad=()):
    return datasets.Dataset.from_dict(
        {
            "image": [f"{k}.png" for k in range(n)],
            "caption": [[f"caption {k}", f"other {k}"] for k in range(n)],
            "pair_id": list(range(n)),
            "bad_reason": ["missing_file" if k in bad else None for k in range(n)],
        }
    )


@pytest.mark.parametrize("fraction", [0.2, 0.5, 1.0])
def test_caption_noise_changes_exactly_the_drawn_share_to_another_images_captions(fraction):
    rows = _rows(23, bad=(4, 9))
    noisy, report = mislabel_captions(rows, fraction, seed=3)
    usable = 23 - 2
    assert report.usable == usable and report.changed == round(fraction * usable)
    changed = [k for k in range(23) if noisy["caption"][k] != rows["caption"][k]]
    assert changed == [k for k in range(23) if noisy["noisy"][k]]
    assert len(changed) == report.changed and not {4, 9} & set(changed)
    for k in changed:  # another image's whole caption list, never its own
        donor = int(noisy["caption"][k][0].split()[-1])
        assert donor != k and noisy["caption"][k] == rows["caption"][donor]
    # Every caption still appears exactly once: captions were exchanged, not duplicated.
    assert Counter(map(tuple, noisy["caption"])) == Counter(map(tuple, rows["caption"]))


def test_caption_noise_is_a_function_of_the_seed():
    rows = _rows(31)
    first, _ = mislabel_captions(rows, 0.3, seed=5)
    again, _ = mislabel_captions(rows, 0.3, seed=5)
    other, _ = mislabel_captions(rows, 0.3, seed=6)
    assert first["caption"] == again["caption"]
    assert first["noisy"] != other["noisy"]
    clean, report = mislabel_captions(rows, 0.0, seed=5)
    assert clean["caption"] == rows["caption"] and report.changed == 0


def test_caption_noise_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mislabel_captions(_rows(5), 1.5, seed=0)
    with pytest.raises(ValueError, match="2 rows"):
        mislabel_captions(_rows(5), 0.2, seed=0)  # one row drawn: nobody to exchange with
    with pytest.raises(ValueError, match="--streaming"):
        mislabel_captions(_rows(5).to_iterable_dataset(), 0.5, seed=0)


# --------------------------------------------------------------------------------------------- a whole run
def test_a_run_trains_on_its_split_and_refuses_to_train_on_its_evaluation_images(tmp_path):
    from test_run_mcd import TINY_RUN, _load_script

    run_mcd = _load_script()
    path = write_jsonl(tmp_path)
    args = TINY_RUN + [
        "--dataset", str(path), "--image_column", "file_name", "--eval_synthetic", "false",
        "--eval_retrieval_file", str(path), "--eval_retrieval_split", "test", "--per_device_train_batch_size", "2",
        "--max_steps", "2",
    ]  # fmt: skip
    run_mcd.main(args + ["--output_dir", str(tmp_path / "clean")])
    assert (tmp_path / "clean" / "mcd-model" / "model.safetensors").is_file()
    with pytest.raises(LeakError, match=r"_retrieval' shares 2 image"):
        run_mcd.main(args + ["--output_dir", str(tmp_path / "leak"), "--split_column", ""])
    assert not (tmp_path / "leak" / "mcd-model").exists()
