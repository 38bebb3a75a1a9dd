# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""modeling_mcd.evaluation.tasks (the evaluation sets of a run), the chance levels, and the printed table."""

from __future__ import annotations

import itertools
import json
from functools import partial

import numpy as np
import pytest
from conftest import TINY_IMAGE_SIZE, tiny_tokenizer
from PIL import Image

from modeling_mcd.evaluation.metrics import classification_chance
from modeling_mcd.evaluation.report import format_metrics
from modeling_mcd.evaluation.retrieval import retrieval_chance
from modeling_mcd.evaluation.tasks import (
    RetrievalTask,
    ZeroShotTask,
    build_eval_tasks,
    chance_levels,
    run_tasks,
    task_splits,
)
from modeling_mcd.synthetic import SyntheticConfig
from modeling_mcd.trainer.builder import evaluation_image_processor


def _png(path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.RandomState(seed).randint(0, 256, (13, 17, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def eval_files(tmp_path):
    """A 3-class image folder with class names, and a captions file with a test split of 4 images."""
    folder = tmp_path / "toy" / "test"
    for k, name in enumerate(["cat", "dog", "red"]):
        for i in range(4):
            _png(folder / name / f"{i}.png", seed=10 * k + i)
    (tmp_path / "toy" / "classnames.json").write_text(json.dumps(["a cat", "a dog", "red"]))
    lines = []
    for i in range(6):
        _png(tmp_path / "flickr" / "images" / f"{i}.png", seed=100 + i)
        split = "test" if i < 4 else "train"
        lines.append({"file_name": f"images/{i}.png", "captions": [f"a photo {i}", f"the dog {i}"], "split": split})
    captions = tmp_path / "flickr" / "captions.jsonl"
    captions.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return folder, captions


def test_tasks_are_named_after_their_data_and_keep_every_test_image(eval_files):
    folder, captions = eval_files
    tasks = build_eval_tasks(zero_shot_folder=str(folder), retrieval_file=str(captions))
    zero_shot, retrieval = tasks
    assert isinstance(zero_shot, ZeroShotTask) and zero_shot.name == "toy"  # a split folder names its dataset
    assert list(zero_shot.classnames) == ["a cat", "a dog", "red"] and len(zero_shot.images) == 12
    assert isinstance(retrieval, RetrievalTask) and retrieval.name == "flickr"
    assert len(retrieval.images) == 4 and len(retrieval.texts) == 8  # the test split only
    capped = build_eval_tasks(zero_shot_folder=str(folder), retrieval_file=str(captions), max_samples=3)
    assert len(capped[0].images) == 3 and len(set(capped[0].labels)) > 1  # a seeded sample, not the first class
    assert len(capped[1].images) == 3 and max(capped[1].text_to_image) == 2 and len(capped[1].texts) == 6
    # each task names its split, keyed like its metrics (`toy_zero_shot_top1`): the model card's model-index
    assert task_splits(tasks) == {"toy_zero_shot": "test", "flickr_retrieval": "test"}
    # Settings are chosen on another split (`--eval_retrieval_split val`): only its rows, and its name in the record.
    (val,) = build_eval_tasks(retrieval_file=str(captions), retrieval_split="train")
    assert len(val.images) == 2 and val.texts[0] == "a photo 4" and task_splits([val]) == {"flickr_retrieval": "train"}
    folder.rename(folder.parent / "all")
    assert task_splits(build_eval_tasks(zero_shot_folder=str(folder.parent / "all"))) == {"all_zero_shot": None}


def test_the_in_training_zero_shot_folder_uses_every_readable_image(tmp_path, caplog):
    """As `mcd eval`: file names with a split word are images like any other, a corrupt one is left out and named
    (or stops the run), and the count is logged."""
    folder = tmp_path / "imagenet" / "val"
    for k, wnid in enumerate(["n01440764", "n01443537"]):
        for i in range(5):
            _png(folder / wnid / f"ILSVRC2012_val_{5 * k + i + 1:08d}.JPEG", seed=k * 5 + i)
    broken = folder / "n01443537" / "ILSVRC2012_val_00000007.JPEG"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n and then nothing")
    with caplog.at_level("INFO"):
        (task,) = build_eval_tasks(zero_shot_folder=str(folder))
    assert len(task.images) == 9 and list(task.labels) == [0] * 5 + [1] * 4
    assert broken not in task.images.paths and (task.name, task.split) == ("imagenet", "val")
    assert f"9 images in 2 classes from {folder}; 1 unreadable skipped: {broken}: not_an_image" in caplog.text
    capped = build_eval_tasks(zero_shot_folder=str(folder), max_samples=4)[0]
    assert len(capped.images) == 4 and set(capped.images.paths) <= set(task.images.paths)  # still undecoded
    with pytest.raises(ValueError, match=f"cannot read image {broken}"):
        build_eval_tasks(zero_shot_folder=str(folder), on_bad_image="raise")


def test_run_reports_every_metric_that_has_a_chance_level(eval_files, tiny_model):
    folder, captions = eval_files
    tasks = build_eval_tasks(
        SyntheticConfig(image_size=32, num_train=4, num_validation=2, num_test=5, seed=0),
        zero_shot_folder=str(folder),
        retrieval_file=str(captions),
    )
    preprocess = partial(evaluation_image_processor(TINY_IMAGE_SIZE), return_tensors="pt")  # what run_mcd passes
    metrics = run_tasks(tasks, tiny_model, tiny_tokenizer(), preprocess)
    chance = chance_levels(tasks)
    assert set(chance) <= set(metrics)
    assert {"synthetic_zero_shot_top1", "toy_zero_shot_top1", "flickr_retrieval_text_to_image_R@1"} <= set(chance)
    table = format_metrics("final", metrics, chance)
    assert all(name in table for name in metrics) and "chance" in table


def test_retrieval_chance_is_the_mean_over_every_ranking():
    """Exhaustive reference: 3 images x 2 captions, every ordering of the candidates equally likely."""
    num_images, per_image = 3, 2
    text_to_image = [i for i in range(num_images) for _ in range(per_image)]
    num_texts = len(text_to_image)
    chance = retrieval_chance(num_images, num_texts, recall_at=(1, 2, 4))
    for k in (1, 2, 4):
        # image -> text: image 0 hits when one of its captions is among the first k of a random caption order
        hits = [any(text_to_image[t] == 0 for t in order[:k]) for order in itertools.permutations(range(num_texts))]
        assert chance[f"image_to_text_R@{k}"] == pytest.approx(np.mean(hits))
        orders = list(itertools.permutations(range(num_images)))
        assert chance[f"text_to_image_R@{k}"] == pytest.approx(np.mean([0 in order[:k] for order in orders]))
    best = [min(order.index(t) for t in (0, 1)) + 1 for order in itertools.permutations(range(num_texts))]
    assert chance["image_to_text_mean_rank"] == pytest.approx(np.mean(best))
    assert chance["text_to_image_mean_rank"] == pytest.approx(2.0)


def test_classification_chance_caps_k_at_the_number_of_classes():
    assert classification_chance(3) == pytest.approx({"top1": 1 / 3, "top5": 1.0, "mean_per_class_accuracy": 1 / 3})


def test_format_metrics_shows_chance_only_where_known():
    table = format_metrics("t", {"a_top1": 0.5, "num": 7}, {"a_top1": 0.1})
    lines = table.splitlines()
    assert lines[0] == "t" and "chance" in lines[1]
    assert lines[3].split() == ["a_top1", "0.5000", "0.1000"] and lines[4].split() == ["num", "7"]
