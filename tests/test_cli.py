# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""`mcd eval <task>` end to end on tiny saved models (MCDModel and stock VisionTextDualEncoderModel) and tiny
data written in the test; each result is checked against the library functions called directly."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    BertConfig,
    BertTokenizerFast,
    VisionTextDualEncoderConfig,
    VisionTextDualEncoderModel,
    VisionTextDualEncoderProcessor,
    ViTConfig,
    ViTImageProcessor,
)

from modeling_mcd import MCDConfig, MCDModel, MCDProcessor
from modeling_mcd.cli.main import build_parser, main
from modeling_mcd.evaluation import (
    build_zero_shot_classifier,
    encode_images,
    encode_texts,
    get_templates,
    linear_probe_metrics,
    load_model_and_processor,
    retrieval_metrics,
    zero_shot_metrics,
)

WORDS = [
    "a",
    "photo",
    "of",
    "the",
    "red",
    "green",
    "blue",
    "square",
    "circle",
    "cat",
    "dog",
    "on",
    "in",
    "big",
    "small",
    "picture",
]
CLASSES = ["red", "green", "blue"]
COLOURS = {"red": (220, 20, 20), "green": (20, 200, 30), "blue": (30, 40, 210)}


def tiny_towers(vocab_size):
    torch.manual_seed(0)
    vision = ViTConfig(
        image_size=30, patch_size=6, hidden_size=12, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16
    )
    text = BertConfig(
        vocab_size=vocab_size,
        hidden_size=10,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=14,
        max_position_embeddings=24,
    )
    return vision, text


def tiny_tokenizer(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *WORDS]
    vocab_file = tmp_path / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n")
    return BertTokenizerFast(vocab_file=str(vocab_file)), len(vocab)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """Two saved dual encoders: an MCDModel and a stock VisionTextDualEncoderModel, both tiny."""
    root = tmp_path_factory.mktemp("models")
    tokenizer, vocab_size = tiny_tokenizer(root)
    image_processor = ViTImageProcessor(size={"height": 30, "width": 30})
    vision, text = tiny_towers(vocab_size)

    mcd_dir = root / "mcd"
    MCDModel(MCDConfig.from_vision_text_configs(vision, text, projection_dim=11)).save_pretrained(mcd_dir)
    MCDProcessor(image_processor, tokenizer).save_pretrained(mcd_dir)

    vtde_dir = root / "vtde"
    vtde_config = VisionTextDualEncoderConfig.from_vision_text_configs(vision, text, projection_dim=11)
    VisionTextDualEncoderModel(vtde_config).save_pretrained(vtde_dir)
    VisionTextDualEncoderProcessor(image_processor, tokenizer).save_pretrained(vtde_dir)
    return {"mcd": mcd_dir, "vtde": vtde_dir}


def coloured_image(colour, seed):
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour)[None, None] + rng.integers(-30, 30, (13, 17, 3)), 0, 255)
    return Image.fromarray(pixels.astype(np.uint8))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Image folders (train/test per class, with display names), captions.jsonl and a SugarCrepe fixture."""
    root = tmp_path_factory.mktemp("data")
    folders = {"red": "c0", "green": "c1", "blue": "c2"}
    for split, count in (("train", 5), ("test", 3)):
        for k, (name, folder) in enumerate(folders.items()):
            (root / "colours" / split / folder).mkdir(parents=True)
            for i in range(count):
                coloured_image(COLOURS[name], seed=100 * count + 10 * k + i).save(
                    root / "colours" / split / folder / f"{i}.png"
                )
    (root / "colours" / "classnames.json").write_text(json.dumps([f"{name} square" for name in folders]))
    (root / "colours" / "folders.json").write_text(json.dumps(list(folders.values())))

    (root / "flickr" / "images").mkdir(parents=True)
    rows = []
    for i, name in enumerate(["red", "green", "blue", "red"]):
        coloured_image(COLOURS[name], seed=i).save(root / "flickr" / "images" / f"{i}.jpg")
        captions = [f"a {name} square", f"a photo of a {name} circle", f"the {name} picture"]
        rows.append({"file_name": f"images/{i}.jpg", "captions": captions, "split": "test"})
    rows.append({"file_name": "images/0.jpg", "captions": ["a big dog"], "split": "train"})
    (root / "flickr" / "captions.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))

    (root / "sugarcrepe").mkdir()
    samples = {
        str(i): {"filename": f"{i % 4}.jpg", "caption": f"a {n} square", "negative_caption": f"a {n} circle"}
        for i, n in enumerate(["red", "green", "blue", "red", "blue"])
    }
    (root / "sugarcrepe" / "replace_obj.json").write_text(json.dumps(samples))
    swaps = {"7": {"filename": "2.jpg", "caption": "a cat on a dog", "negative_caption": "a dog on a cat"}}
    (root / "sugarcrepe" / "swap_obj.json").write_text(json.dumps(swaps))
    return root


def run_cli(tmp_path, argv):
    output = tmp_path / "metrics.json"
    assert main([*argv, "--device", "cpu", "--batch-size", "4", "--output-json", str(output)]) == 0
    result = json.loads(output.read_text())
    assert result["task"] == argv[1]
    return result["metrics"]


@pytest.mark.parametrize("kind", ["mcd", "vtde"])
def test_zero_shot_matches_library(kind, model_dirs, data_dir, tmp_path, capsys):
    metrics = run_cli(
        tmp_path, ["eval", "zero-shot", "--model", str(model_dirs[kind]), "--data", str(data_dir / "colours" / "test")]
    )
    assert "top1" in capsys.readouterr().out

    model, preprocess, tokenizer = load_model_and_processor(str(model_dirs[kind]))
    images, labels = [], []
    for label in range(3):  # folders c0, c1, c2
        for i in range(3):
            images.append(Image.open(data_dir / "colours" / "test" / f"c{label}" / f"{i}.png"))
            labels.append(label)
    classifier = build_zero_shot_classifier(
        model, tokenizer, ["red square", "green square", "blue square"], get_templates(), progress=False
    )
    image_features = encode_images(model, images, preprocess, progress=False)
    expected = zero_shot_metrics(image_features, classifier, torch.tensor(labels))
    assert metrics == pytest.approx(expected)


@pytest.mark.parametrize("kind", ["mcd", "vtde"])
def test_retrieval_matches_library(kind, model_dirs, data_dir, tmp_path):
    argv = ["eval", "retrieval", "--model", str(model_dirs[kind]), "--data", str(data_dir / "flickr")]
    metrics = run_cli(tmp_path, argv)
    assert metrics["num_images"] == 4 and metrics["num_texts"] == 12  # the "train" row is left out

    model, preprocess, tokenizer = load_model_and_processor(str(model_dirs[kind]))
    images = [Image.open(data_dir / "flickr" / "images" / f"{i}.jpg") for i in range(4)]
    captions = [row["captions"] for row in map(json.loads, (data_dir / "flickr" / "captions.jsonl").open())][:4]
    texts = [caption for group in captions for caption in group]
    expected = retrieval_metrics(
        encode_images(model, images, preprocess, progress=False),
        encode_texts(model, tokenizer, texts, progress=False),
        torch.arange(4).repeat_interleave(3),
    )
    assert metrics == pytest.approx(expected)


@pytest.mark.parametrize("kind", ["mcd", "vtde"])
def test_linear_probe_matches_library(kind, model_dirs, data_dir, tmp_path):
    argv = ["eval", "linear-probe", "--model", str(model_dirs[kind]), "--data", str(data_dir / "colours")]
    metrics = run_cli(tmp_path, [*argv, "--val-split", "test", "--max-iter", "50"])
    assert metrics["num_samples"] == 9

    model, preprocess, _ = load_model_and_processor(str(model_dirs[kind]))
    features = {}
    for split, count in (("train", 5), ("test", 3)):
        paths = [data_dir / "colours" / split / f"c{label}" / f"{i}.png" for label in range(3) for i in range(count)]
        images = encode_images(model, [Image.open(path) for path in paths], preprocess, progress=False)
        features[split] = (images, torch.arange(3).repeat_interleave(count))
    test_features, test_labels = features["test"]
    expected = linear_probe_metrics(
        *features["train"], test_features, test_labels, val_features=test_features, val_labels=test_labels, max_iter=50
    )
    assert metrics == pytest.approx(expected)


@pytest.mark.parametrize("kind", ["mcd", "vtde"])
def test_compositionality_matches_library(kind, model_dirs, data_dir, tmp_path):
    argv = ["eval", "compositionality", "--model", str(model_dirs[kind]), "--data", str(data_dir / "sugarcrepe")]
    metrics = run_cli(tmp_path, [*argv, "--images", str(data_dir / "flickr" / "images")])
    assert metrics["num_samples"] == 6

    model, preprocess, tokenizer = load_model_and_processor(str(model_dirs[kind]))
    samples = [*json.loads((data_dir / "sugarcrepe" / "replace_obj.json").read_text()).values()]
    image = encode_images(
        model, [Image.open(data_dir / "flickr" / "images" / s["filename"]) for s in samples], preprocess, progress=False
    )
    positive = (image * encode_texts(model, tokenizer, [s["caption"] for s in samples], progress=False)).sum(1)
    negative = (image * encode_texts(model, tokenizer, [s["negative_caption"] for s in samples], progress=False)).sum(1)
    assert metrics["replace_obj"] == pytest.approx((positive > negative).float().mean().item())
    assert metrics["overall"] == pytest.approx((metrics["replace_obj"] * 5 + metrics["swap_obj"]) / 6)


def test_bad_input_is_a_clear_error(model_dirs, data_dir, tmp_path, capsys):
    templates = tmp_path / "templates.json"
    templates.write_text(json.dumps(["a photo of a cat."]))
    argv = ["eval", "zero-shot", "--model", str(model_dirs["mcd"]), "--data", str(data_dir / "colours" / "test")]
    assert main([*argv, "--templates", str(templates)]) == 2
    assert "exactly one '{}'" in capsys.readouterr().err
    assert main([*argv, "--dataset", "no-such-set"]) == 2
    assert "no-such-set" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval", "retrieval"])  # --model and --data are required


def test_zero_shot_uses_every_image_and_names_what_it_cannot_read(model_dirs, tmp_path, capsys):
    """ImageNet's validation file names (`ILSVRC2012_val_*.JPEG`), a corrupt image, an empty folder, class names
    that do not match: every image counted and printed, every problem a clear `mcd: error:` line."""
    folder = tmp_path / "val"
    for k, name in enumerate(CLASSES):
        (folder / name).mkdir(parents=True)
        for i in range(4):
            coloured_image(COLOURS[name], seed=10 * k + i).save(folder / name / f"ILSVRC2012_val_{4 * k + i:08d}.JPEG")
    argv = ["eval", "zero-shot", "--model", str(model_dirs["mcd"]), "--data", str(folder)]
    metrics = run_cli(tmp_path, argv)
    assert metrics["num_samples"] == 12
    assert f"mcd eval zero-shot: 12 images in 3 classes from {folder}" in capsys.readouterr().out

    broken = folder / "green" / "ILSVRC2012_val_00000005.JPEG"
    broken.write_bytes(broken.read_bytes()[:-60])  # a truncated JPEG
    assert run_cli(tmp_path, argv)["num_samples"] == 11
    assert f"11 images in 3 classes from {folder}; 1 unreadable skipped: {broken}: " in capsys.readouterr().out
    assert main([*argv, "--on-bad-image", "raise"]) == 2
    assert f"mcd: error: cannot read image {broken}: truncated" in capsys.readouterr().err

    assert main([*argv, "--dataset", "cifar10"]) == 2
    assert "mcd: error: 10 class names (--dataset cifar10) do not match the 3 classes of" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([*argv[:-1], str(tmp_path / "empty")]) == 2
    assert f"mcd: error: no images in {tmp_path / 'empty'}" in capsys.readouterr().err


def _table(out: str) -> dict[str, list[str]]:
    """The rows of the printed metrics table: metric -> [value, chance] (chance absent for counts)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("metric"))
    assert lines[start].split() == ["metric", "value", "chance"]
    return {line.split()[0]: line.split()[1:] for line in lines[start + 2 :] if line.strip()}


@pytest.mark.parametrize("task", ["zero-shot", "retrieval", "linear-probe", "compositionality"])
def test_every_metric_is_printed_and_saved_with_its_chance_level(task, model_dirs, data_dir, tmp_path, capsys):
    args = {
        "zero-shot": ["--data", str(data_dir / "colours" / "test")],
        "retrieval": ["--data", str(data_dir / "flickr")],
        "linear-probe": ["--data", str(data_dir / "colours"), "--max-iter", "20"],
        "compositionality": ["--data", str(data_dir / "sugarcrepe"), "--images", str(data_dir / "flickr" / "images")],
    }[task]
    output = tmp_path / "m.json"
    argv = ["eval", task, "--model", str(model_dirs["mcd"]), *args, "--device", "cpu", "--output-json", str(output)]
    assert main(argv) == 0
    rows = _table(capsys.readouterr().out)
    saved = json.loads(output.read_text())
    counts = {name for name in saved["metrics"] if name.startswith("num_") or name == "C"}
    for name in saved["metrics"]:
        assert len(rows[name]) == (1 if name in counts else 2), (name, rows[name])
    assert set(saved["chance"]) == set(saved["metrics"]) - counts
    expected = {
        "zero-shot": {"top1": 1 / 3, "top5": 1.0, "mean_per_class_accuracy": 1 / 3},
        "retrieval": {"text_to_image_R@1": 1 / 4, "image_to_text_R@1": 1 - 9 / 12, "text_to_image_mean_rank": 2.5},
        "linear-probe": {"top1": 1 / 3, "val_top1": 1 / 3},
        "compositionality": {"overall": 0.5, "replace_obj": 0.5, "category_mean": 0.5},
    }[task]
    for name, value in expected.items():
        assert saved["chance"][name] == pytest.approx(value)
        assert float(rows[name][1]) == pytest.approx(value, abs=5e-5)


def test_fewer_than_two_classes_or_images_is_refused(model_dirs, data_dir, tmp_path, capsys):
    """With one class every image is right, with one image every caption finds it: 100 % that measures nothing."""
    one_class = tmp_path / "one" / "red"
    one_class.mkdir(parents=True)
    coloured_image(COLOURS["red"], seed=0).save(one_class / "0.png")
    coloured_image(COLOURS["red"], seed=1).save(one_class / "1.png")
    argv = ["eval", "zero-shot", "--model", str(model_dirs["mcd"]), "--data", str(tmp_path / "one"), "--device", "cpu"]
    assert main(argv) == 2
    assert "at least 2 classes" in capsys.readouterr().err
    one_image = tmp_path / "one-image"
    one_image.mkdir()
    coloured_image(COLOURS["red"], seed=0).save(one_image / "0.jpg")
    (one_image / "captions.jsonl").write_text(json.dumps({"file_name": "0.jpg", "captions": ["a red square"]}) + "\n")
    argv = ["eval", "retrieval", "--model", str(model_dirs["mcd"]), "--data", str(one_image), "--device", "cpu"]
    assert main(argv) == 2
    assert "at least 2 images" in capsys.readouterr().err


def test_mcd_card_takes_the_chance_levels_of_mcd_eval(model_dirs, data_dir, tmp_path):
    from modeling_mcd.hub.model_card import load_results

    output = tmp_path / "zs.json"
    data = str(data_dir / "colours" / "test")
    argv = ["eval", "zero-shot", "--model", str(model_dirs["mcd"]), "--data", data, "--output-json", str(output)]
    assert main([*argv, "--device", "cpu"]) == 0
    metrics, chance, _ = load_results(output)
    assert chance["colours_zero_shot_top1"] == pytest.approx(1 / 3) and set(chance) <= set(metrics)
