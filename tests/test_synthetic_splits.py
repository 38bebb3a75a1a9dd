"""Tests of modeling_mcd.synthetic.splits: the `datasets` splits hold exactly the rendered scenes."""

from __future__ import annotations

import numpy as np
from _synthetic_helpers import TINY, scenes
from datasets import ClassLabel, Image

from modeling_mcd.synthetic import (
    load_synthetic_dataset,
    render_sample,
    retrieval_dataset,
    synthetic_pairs,
    zero_shot_classes,
    zero_shot_dataset,
)


def test_dataset_splits_features_and_rows_match_render_sample():
    dataset = load_synthetic_dataset(TINY)
    assert {split: len(rows) for split, rows in dataset.items()} == {"train": 7, "validation": 3, "test": 5}
    features = dataset["train"].features
    assert isinstance(features["image"], Image) and isinstance(features["label"], ClassLabel)
    assert features["label"].names == zero_shot_classes(TINY)[0]
    for split in ("validation", "test"):
        for index, row in enumerate(dataset[split]):
            expected = render_sample(TINY, split, index)
            assert np.array_equal(np.asarray(row["image"].convert("RGB")), np.asarray(expected["image"]))
            assert {key: row[key] for key in ("caption", "captions", "objects", "label")} == {
                key: expected[key] for key in ("caption", "captions", "objects", "label")
            }


def test_retrieval_dataset_has_several_captions_per_image():
    dataset = retrieval_dataset(TINY, split="validation")
    assert dataset.column_names == ["image", "captions"] and len(dataset) == TINY.num_validation
    for index, row in enumerate(dataset):
        assert row["captions"] == render_sample(TINY, "validation", index)["captions"]
        assert len(row["captions"]) == TINY.captions_per_image


def test_zero_shot_labels_name_the_single_or_largest_object():
    names, templates = zero_shot_classes(TINY)
    assert len(names) == len(set(names)) == len(TINY.colours) * len(TINY.shapes)
    assert all("{}" in template for template in templates)
    dataset = zero_shot_dataset(TINY)
    assert dataset.column_names == ["image", "label"] and len(dataset) == TINY.num_test
    for index, row in enumerate(dataset):
        sample = render_sample(TINY, "test", index, single_object=True)
        (obj,) = sample["objects"]
        assert names[row["label"]] == f"{obj['colour']} {obj['shape']}" and row["label"] == sample["label"]
        assert np.array_equal(np.asarray(row["image"].convert("RGB")), np.asarray(sample["image"]))
    for sample in scenes(count=20):
        areas = [(o["bbox"][2] - o["bbox"][0]) * (o["bbox"][3] - o["bbox"][1]) for o in sample["objects"]]
        largest = sample["objects"][areas.index(max(areas))]
        assert names[sample["label"]] == f"{largest['colour']} {largest['shape']}"


def test_synthetic_pairs_keep_every_caption_for_the_draw():
    split = load_synthetic_dataset(TINY)["validation"]
    pairs = synthetic_pairs(split)
    assert pairs.column_names == ["image", "caption"] and len(pairs) == TINY.num_validation
    assert pairs["caption"] == split["captions"]
