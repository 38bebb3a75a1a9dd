"""The three ways users load a saved MCD folder: the installed package, `trust_remote_code` in a process
that never imports `modeling_mcd`, and the zero-shot pipeline."""

import json
import os

import numpy as np
import pytest
import torch
from conftest import TINY_IMAGE_SIZE, remote_code_report
from PIL import Image
from transformers import AutoModel, AutoProcessor, pipeline

from modeling_mcd import MCDModel, MCDProcessor


def _image(seed: int = 0, size=(41, 37)) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (*size, 3), dtype=np.uint8))


def test_saved_folder_carries_code_and_auto_map(tiny_model_dir):
    files = set(os.listdir(tiny_model_dir))
    assert {"configuration_mcd.py", "modeling_mcd.py", "processing_mcd.py", "model.safetensors"} <= files
    auto_map = json.load(open(os.path.join(tiny_model_dir, "config.json")))["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_mcd.MCDConfig",
        "AutoModel": "modeling_mcd.MCDModel",
        "AutoModelForZeroShotImageClassification": "modeling_mcd.MCDModel",
    }
    processor_config = json.load(open(os.path.join(tiny_model_dir, "processor_config.json")))
    assert processor_config["auto_map"]["AutoProcessor"] == "processing_mcd.MCDProcessor"


def test_installed_package_route(tiny_model_dir, tiny_model):
    model = AutoModel.from_pretrained(tiny_model_dir).eval()
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    assert type(model) is MCDModel and type(processor) is MCDProcessor
    inputs = processor(text=["a red circle", "a dog"], images=[_image(0), _image(1)], return_tensors="pt", padding=True)
    assert inputs["pixel_values"].shape == (2, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    with torch.inference_mode():
        torch.testing.assert_close(model(**inputs).logits_per_image, tiny_model(**inputs).logits_per_image)


def test_trust_remote_code_without_the_package(tiny_model_dir, tmp_path):
    # A fresh interpreter where importing `modeling_mcd` is made impossible: everything must come from the code
    # files inside the folder, as it would from the Hub.
    report = remote_code_report(tiny_model_dir, tmp_path)
    assert report["model_module"].startswith("transformers_modules.")
    assert report["processor"] == "MCDProcessor"
    assert report["package_imported"] is False

    # The remote-code model computes exactly what the installed one does.
    model = MCDModel.from_pretrained(tiny_model_dir).eval()
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    image = Image.new("RGB", (33, 29), (200, 30, 30))
    inputs = processor(text=["a red circle", "a blue square"], images=[image], return_tensors="pt", padding=True)
    with torch.inference_mode():
        expected = model(**inputs).logits_per_image
    torch.testing.assert_close(torch.tensor(report["logits"]), expected, rtol=1e-5, atol=1e-5)
    probs = expected.softmax(-1)[0]
    assert report["scores"]["a red circle"] == pytest.approx(probs[0].item(), abs=1e-5)


def test_zero_shot_pipeline_from_path(tiny_model_dir):
    classifier = pipeline("zero-shot-image-classification", model=tiny_model_dir)
    labels = ["red circle", "blue square", "cat"]
    result = classifier(_image(3), candidate_labels=labels, hypothesis_template="a photo of a {}.")
    assert sorted(r["label"] for r in result) == sorted(labels)
    scores = [r["score"] for r in result]
    assert scores == sorted(scores, reverse=True)
    assert sum(scores) == pytest.approx(1.0, abs=1e-5)

    # the scores are the softmax of the model's own logits for this image and these prompts
    model = MCDModel.from_pretrained(tiny_model_dir).eval()
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    prompts = [f"a photo of a {label}." for label in labels]
    inputs = processor(text=prompts, images=[_image(3)], return_tensors="pt", padding=True)
    with torch.inference_mode():
        probs = model(**inputs).logits_per_image.softmax(-1)[0]
    by_label = {r["label"]: r["score"] for r in result}
    for label, prob in zip(labels, probs):
        assert by_label[label] == pytest.approx(prob.item(), abs=1e-5)
