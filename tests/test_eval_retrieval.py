# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Retrieval metrics: a hand-worked 3-image x 5-caption example, the chunked ranks against naive loops,
separable and random features, and the caption loader (including the shared Flickr8k test split)."""

import json
from math import comb

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA
from PIL import Image
from torch import nn

from modeling_mcd.evaluation import load_captioned_images, retrieval_metrics, retrieval_ranks

FLICKR8K = SHARED_DATA / "flickr8k"

# Hand-worked example: 3 images, captions 0-4 belong to image 0, 5-9 to image 1, 10-14 to image 2.
# With image features = the identity, row t below is caption t's score against images 0, 1, 2.
SCORES = torch.tensor(
    [
        [0.90, 0.10, 0.20],  # t0  -> image 0: rank 1
        [0.30, 0.80, 0.10],  # t1  -> image 0: rank 2
        [0.20, 0.50, 0.60],  # t2  -> image 0: rank 3
        [0.40, 0.00, 0.10],  # t3  -> image 0: rank 1
        [0.05, 0.70, 0.35],  # t4  -> image 0: rank 3
        [0.50, 0.60, 0.00],  # t5  -> image 1: rank 1
        [0.10, 0.20, 0.30],  # t6  -> image 1: rank 2
        [0.70, 0.15, 0.80],  # t7  -> image 1: rank 3
        [0.00, 0.45, 0.25],  # t8  -> image 1: rank 1
        [0.60, 0.30, 0.55],  # t9  -> image 1: rank 3
        [0.15, 0.62, 0.65],  # t10 -> image 2: rank 1
        [0.35, 0.40, 0.50],  # t11 -> image 2: rank 1
        [0.85, 0.66, 0.02],  # t12 -> image 2: rank 3
        [0.25, 0.75, 0.45],  # t13 -> image 2: rank 2
        [0.45, 0.35, 0.40],  # t14 -> image 2: rank 2
    ]
)
# Image -> text, by column: image 0's best caption t0 (0.90) is the top score: rank 1. Image 1's best caption
# t5 (0.60) is beaten by t1, t4, t10, t12, t13: rank 6. Image 2's best caption t10 (0.65) is beaten by t7: rank 2.
EXPECTED = {
    "image_to_text_R@1": 1 / 3,
    "image_to_text_R@5": 2 / 3,
    "image_to_text_R@10": 1.0,
    "image_to_text_mean_rank": (1 + 6 + 2) / 3,
    "image_to_text_median_rank": 2.0,
    "text_to_image_R@1": 6 / 15,  # ranks: six 1s, four 2s, five 3s
    "text_to_image_R@5": 1.0,
    "text_to_image_R@10": 1.0,
    "text_to_image_mean_rank": (6 * 1 + 4 * 2 + 5 * 3) / 15,
    "text_to_image_median_rank": 2.0,  # the 8th of 15 sorted ranks
}


def naive_ranks(image_features, text_features, text_to_image):
    """Sort every row fully and find the correct answer(s) by looping."""
    scores = (image_features @ text_features.t()).numpy()  # (I, T)
    image_ranks = []
    for i in range(scores.shape[0]):
        order = list(np.argsort(-scores[i], kind="stable"))
        image_ranks.append(min(order.index(t) for t in range(scores.shape[1]) if text_to_image[t] == i) + 1)
    text_ranks = []
    for t in range(scores.shape[1]):
        order = list(np.argsort(-scores[:, t], kind="stable"))
        text_ranks.append(order.index(int(text_to_image[t])) + 1)
    return torch.tensor(image_ranks), torch.tensor(text_ranks)


def test_hand_worked_example_with_five_captions_per_image():
    text_to_image = torch.arange(3).repeat_interleave(5)
    metrics = retrieval_metrics(torch.eye(3), SCORES, text_to_image, chunk_size=2)
    assert {key: metrics[key] for key in EXPECTED} == pytest.approx(EXPECTED)
    assert metrics["mean_recall"] == pytest.approx(sum(v for k, v in EXPECTED.items() if "R@" in k) / 6)
    assert (metrics["num_images"], metrics["num_texts"]) == (3, 15)

    # The captions need not be grouped: shuffling them changes nothing.
    order = torch.randperm(15, generator=torch.Generator().manual_seed(0))
    shuffled = retrieval_metrics(torch.eye(3), SCORES[order], text_to_image[order])
    assert shuffled == pytest.approx(metrics)


@pytest.mark.parametrize("chunk_size", [1, 4, 1024])
def test_chunked_ranks_equal_naive_loops(chunk_size):
    torch.manual_seed(0)
    captions_per_image = torch.randint(1, 7, (23,))  # uneven: 1 to 6 captions per image
    text_to_image = torch.repeat_interleave(torch.arange(23), captions_per_image)
    text_to_image = text_to_image[torch.randperm(len(text_to_image))]
    images = nn.functional.normalize(torch.randn(23, 5), dim=-1)
    texts = nn.functional.normalize(torch.randn(len(text_to_image), 5), dim=-1)
    image_ranks, text_ranks = retrieval_ranks(images, texts, text_to_image, chunk_size=chunk_size)
    expected_image_ranks, expected_text_ranks = naive_ranks(images, texts, text_to_image)
    assert torch.equal(image_ranks, expected_image_ranks)
    assert torch.equal(text_ranks, expected_text_ranks)
    metrics = retrieval_metrics(images, texts, text_to_image, chunk_size=chunk_size)
    assert metrics["image_to_text_median_rank"] == pytest.approx(np.median(expected_image_ranks.numpy()))
    assert metrics["text_to_image_R@5"] == pytest.approx((expected_text_ranks <= 5).float().mean().item())


def test_separable_features_give_100_percent():
    torch.manual_seed(1)
    images = nn.functional.normalize(torch.randn(17, 9), dim=-1)
    text_to_image = torch.arange(17).repeat_interleave(5)
    texts = nn.functional.normalize(images[text_to_image] + 0.01 * torch.randn(85, 9), dim=-1)
    metrics = retrieval_metrics(images, texts, text_to_image, chunk_size=6)
    assert metrics["image_to_text_R@1"] == metrics["text_to_image_R@1"] == 1.0
    assert metrics["image_to_text_mean_rank"] == metrics["text_to_image_median_rank"] == 1.0


def test_random_features_give_chance():
    torch.manual_seed(2)
    num_images, num_texts = 400, 2000
    images = nn.functional.normalize(torch.randn(num_images, 32), dim=-1)
    texts = nn.functional.normalize(torch.randn(num_texts, 32), dim=-1)
    metrics = retrieval_metrics(images, texts, torch.arange(num_images).repeat_interleave(5), chunk_size=128)
    assert metrics["text_to_image_R@10"] == pytest.approx(10 / num_images, abs=0.01)
    assert metrics["text_to_image_mean_rank"] == pytest.approx((num_images + 1) / 2, rel=0.1)
    # An image hits at K when any of its 5 captions is among K of T random positions.
    for k in (5, 10):
        chance = 1 - comb(num_texts - 5, k) / comb(num_texts, k)  # 0.0125 and 0.0248
        assert metrics[f"image_to_text_R@{k}"] == pytest.approx(chance, abs=chance / 2)
    # The best of 5 random ranks in T is about (T + 1) / 6.
    assert metrics["image_to_text_mean_rank"] == pytest.approx((num_texts + 1) / 6, rel=0.15)


def test_bad_inputs_are_rejected():
    images, texts = torch.randn(3, 4), torch.randn(5, 4)
    with pytest.raises(ValueError, match="images \\[2\\]"):
        retrieval_metrics(images, texts, torch.tensor([0, 0, 1, 1, 1]))  # image 2 has no caption
    with pytest.raises(ValueError, match="must index the 3 images"):
        retrieval_metrics(images, texts, torch.tensor([0, 1, 2, 3, 0]))
    with pytest.raises(ValueError, match="do not fit"):
        retrieval_metrics(images, torch.randn(5, 6), torch.tensor([0, 1, 2, 0, 0]))


def test_caption_file_forms(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ("a", "b"):
        Image.new("RGB", (6, 4)).save(tmp_path / "images" / f"{name}.png")
    rows = [
        {"file_name": "images/a.png", "captions": ["one", "two"], "split": "test"},
        {"file_name": "images/b.png", "text": "three", "split": "test"},
        {"file_name": "images/b.png", "text": "four", "split": "test"},  # repeated file: one more caption
        {"file_name": "images/a.png", "text": "not in test", "split": "train"},
    ]
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    data = load_captioned_images(tmp_path)
    assert data.captions == ["one", "two", "three", "four"]
    assert data.text_to_image.tolist() == [0, 0, 1, 1]
    assert data.images[1].size == (6, 4) and data.images[1].mode == "RGB"
    assert len(load_captioned_images(tmp_path / "captions.jsonl", split=None).captions) == 5

    (tmp_path / "bad.jsonl").write_text('{"file_name": "images/a.png", "captions": []}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        load_captioned_images(tmp_path / "bad.jsonl", split=None)


def test_shared_flickr8k_test_split():
    data = load_captioned_images(FLICKR8K, split="test")
    assert len(data.images) == 1000 and len(data.captions) == 5000
    assert torch.equal(torch.bincount(data.text_to_image), torch.full((1000,), 5))
    assert data.images[0].size == (64, 64)


def write_captions(folder, rows) -> None:
    (folder / "images").mkdir(exist_ok=True)
    for name in ("a", "b", "c"):
        Image.new("RGB", (6, 4)).save(folder / "images" / f"{name}.png")
    (folder / "captions.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_a_path_leaving_the_caption_files_folder_is_refused_naming_the_line(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (6, 4)).save(tmp_path / "outside.png")
    rows = [{"file_name": "images/a.png", "text": "one"}, {"file_name": "../outside.png", "text": "two"}]
    write_captions(data, rows)
    with pytest.raises(ValueError, match=r"captions.jsonl:2: path_outside_data: '\.\./outside\.png' leaves the"):
        load_captioned_images(data, split=None)
    rows[1]["file_name"] = str(tmp_path / "outside.png")  # absolute: the file's explicit choice
    write_captions(data, rows)
    assert load_captioned_images(data, split=None).images.paths[1] == tmp_path / "outside.png"


def test_fewer_than_two_images_is_no_retrieval_task(tmp_path):
    write_captions(tmp_path, [{"file_name": "images/a.png", "captions": ["one", "two"]}])
    with pytest.raises(ValueError, match=r"1 image .* at least 2 images"):
        load_captioned_images(tmp_path, split=None)


def test_one_image_under_two_spellings_is_one_image(tmp_path):
    rows = [
        {"file_name": "images/a.png", "text": "one"},
        {"file_name": "./images/a.png", "text": "two"},  # the same file: its captions are not negatives
        {"file_name": "images/../images/b.png", "text": "three"},
    ]
    write_captions(tmp_path, rows)
    data = load_captioned_images(tmp_path, split=None)
    assert len(data.images) == 2 and data.text_to_image.tolist() == [0, 0, 1]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'["images/a.png", "one"]', r"captions.jsonl:2 is not a JSON object"),
        (b'{"file_name": "images/a.png", "text": "\\u200b\\u00ad"}', r"captions.jsonl:2: .*empty_caption"),
        (b'{"file_name": "images/gone.png", "text": "one"}', r"captions.jsonl:2: missing_file: no such file: .*gone"),
        (b'{"file_name": "images/a.png", "text": "caf\xe9"}', r"captions.jsonl:2: byte 0xe9 .* not UTF-8"),
    ],
)
def test_a_bad_line_of_a_caption_file_is_named(tmp_path, line, message):
    write_captions(tmp_path, [{"file_name": "images/b.png", "text": "fine"}])
    with open(tmp_path / "captions.jsonl", "ab") as f:
        f.write(line + b"\n")
    with pytest.raises(ValueError, match=message):
        load_captioned_images(tmp_path, split=None)


def test_a_utf16_caption_file_is_read(tmp_path):
    write_captions(tmp_path, [])
    rows = [{"file_name": "images/a.png", "text": "caf\u00e9"}, {"file_name": "images/b.png", "text": "two"}]
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    (tmp_path / "captions.jsonl").write_bytes(text.encode("utf-16"))
    assert load_captioned_images(tmp_path, split=None).captions == ["caf\u00e9", "two"]


def test_a_caption_file_named_through_dot_dot_keeps_its_images_inside(tmp_path, monkeypatch):
    """`../data/captions.jsonl` from another folder: its `images/x.png` stay inside the file's folder."""
    from modeling_mcd.evaluation.data import load_captioned_images

    data, run = tmp_path / "data", tmp_path / "run"
    (data / "images").mkdir(parents=True)
    run.mkdir()
    for k in range(2):
        Image.new("RGB", (5, 5), (k, 0, 0)).save(data / "images" / f"{k}.png")
    (data / "captions.jsonl").write_text(
        "".join(json.dumps({"file_name": f"images/{k}.png", "captions": ["a", "b"]}) + "\n" for k in range(2))
    )
    monkeypatch.chdir(run)
    assert len(load_captioned_images("../data/captions.jsonl", split=None).images) == 2


def test_a_retrieval_file_names_its_splits_as_the_training_loader_does(tmp_path):
    """`validation` rows are the `val` split for evaluation as for training (`data.splits.same_split`)."""
    from modeling_mcd.evaluation.data import load_captioned_images

    (tmp_path / "images").mkdir()
    names = ["train", "validation", "validation", "test"]
    for k in range(len(names)):
        Image.new("RGB", (5, 5), (k, 0, 0)).save(tmp_path / "images" / f"{k}.png")
    (tmp_path / "captions.jsonl").write_text(
        "".join(
            json.dumps({"file_name": f"images/{k}.png", "captions": ["a"], "split": name}) + "\n"
            for k, name in enumerate(names)
        )
    )
    assert len(load_captioned_images(tmp_path / "captions.jsonl", split="val").images) == 2
