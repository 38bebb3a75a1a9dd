# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Compositionality: the metric against a naive loop, the perfect and the inverted model, and the SugarCrepe
loader on a tiny fixture."""

import json

import pytest
import torch
from PIL import Image
from torch import nn

from modeling_mcd.evaluation import compositionality_metrics, load_sugarcrepe


def unit(*shape, seed):
    return nn.functional.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_metric_equals_a_naive_loop():
    images, captions, negatives = unit(29, 6, seed=0), unit(29, 6, seed=1), unit(29, 6, seed=2)
    categories = [["add_att", "replace_rel", "swap_obj"][i % 3] for i in range(29)]
    metrics = compositionality_metrics(images, captions, negatives, categories)
    wins = {}
    for i, category in enumerate(categories):
        win = float(images[i] @ captions[i]) > float(images[i] @ negatives[i])
        wins.setdefault(category, []).append(win)
    for category, values in wins.items():
        assert metrics[category] == pytest.approx(sum(values) / len(values))
    everything = [win for values in wins.values() for win in values]
    assert metrics["overall"] == pytest.approx(sum(everything) / 29)
    assert metrics["category_mean"] == pytest.approx(sum(sum(v) / len(v) for v in wins.values()) / 3)


def test_perfect_and_inverted_models():
    images = unit(8, 5, seed=3)
    categories = ["a"] * 3 + ["b"] * 5
    assert compositionality_metrics(images, images, -images, categories)["overall"] == 1.0
    inverted = compositionality_metrics(images, -images, images, categories)
    assert inverted["a"] == inverted["b"] == inverted["overall"] == 0.0


def test_bad_inputs_are_rejected():
    features = unit(4, 3, seed=4)
    with pytest.raises(ValueError, match="share one"):
        compositionality_metrics(features, features[:3], features, ["a"] * 4)
    with pytest.raises(ValueError, match="categories has 3"):
        compositionality_metrics(features, features, features, ["a"] * 3)
    with pytest.raises(ValueError, match="reserved"):
        compositionality_metrics(features, features, features, ["overall"] * 4)


def test_sugarcrepe_loader(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ("x.jpg", "y.jpg"):
        Image.new("RGB", (5, 3)).save(tmp_path / "images" / name)
    annotations = tmp_path / "sugarcrepe"
    annotations.mkdir()
    replace = {
        "10": {"filename": "x.jpg", "caption": "a red car", "negative_caption": "a blue car"},
        "11": {"filename": "y.jpg", "caption": "a dog on grass", "negative_caption": "a cat on grass"},
    }
    swap = {"3": {"filename": "x.jpg", "caption": "a man with a dog", "negative_caption": "a dog with a man"}}
    (annotations / "replace_att.json").write_text(json.dumps(replace))
    (annotations / "swap_obj.json").write_text(json.dumps(swap))

    data = load_sugarcrepe(annotations, tmp_path / "images")
    assert data.categories == ["replace_att", "replace_att", "swap_obj"]
    assert data.captions == ["a red car", "a dog on grass", "a man with a dog"]
    assert data.negative_captions[2] == "a dog with a man"
    assert len(data.images) == 2 and data.image_index.tolist() == [0, 1, 0]  # x.jpg is read once
    assert len(load_sugarcrepe(annotations / "swap_obj.json", tmp_path / "images").captions) == 1

    swap["4"] = {"filename": "z.jpg", "caption": "c", "negative_caption": "n"}
    (annotations / "swap_obj.json").write_text(json.dumps(swap))
    with pytest.raises(ValueError, match="swap_obj.json, sample '4': image .*z.jpg does not exist"):
        load_sugarcrepe(annotations, tmp_path / "images")
    (annotations / "swap_obj.json").write_text(json.dumps({"5": {"filename": "x.jpg", "caption": "c"}}))
    with pytest.raises(ValueError, match="sample '5': missing \\['negative_caption'\\]"):
        load_sugarcrepe(annotations, tmp_path / "images")
