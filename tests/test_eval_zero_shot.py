# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Zero-shot classification: metrics against scikit-learn, prompt ensembling against a naive loop, the
encoders against the model's own forward, and the data and template loaders."""

import json

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA
from PIL import Image
from sklearn.metrics import balanced_accuracy_score, top_k_accuracy_score
from torch import nn
from transformers import BertConfig, BertTokenizerFast, ViTConfig

from modeling_mcd import MCDConfig, MCDModel
from modeling_mcd.evaluation import (
    build_zero_shot_classifier,
    classification_metrics,
    encode_images,
    encode_texts,
    get_templates,
    load_labelled_images,
    load_prompts,
    zero_shot_metrics,
)

CIFAR10 = SHARED_DATA / "cifar10"
WORDS = ["a", "photo", "of", "the", "cat", "dog", "bird", "small", "big", "blurry"]


@pytest.fixture(scope="module")
def tiny_model_and_tokenizer(tmp_path_factory):
    torch.manual_seed(0)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *WORDS]
    vocab_file = tmp_path_factory.mktemp("tok") / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n")
    vision = ViTConfig(image_size=30, patch_size=6, hidden_size=8, num_hidden_layers=1, num_attention_heads=2)
    text = BertConfig(vocab_size=len(vocab), hidden_size=10, num_hidden_layers=1, num_attention_heads=2)
    model = MCDModel(MCDConfig.from_vision_text_configs(vision, text, projection_dim=7))
    return model, BertTokenizerFast(vocab_file=str(vocab_file))


class PlainTensorFeatures(nn.Module):
    """A model whose `get_*_features` return bare tensors (transformers 4 style)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def get_image_features(self, pixel_values):
        return self.model.get_image_features(pixel_values).pooler_output

    def get_text_features(self, input_ids, attention_mask=None):
        return self.model.get_text_features(input_ids, attention_mask).pooler_output


# ------------------------------------------------------------------------------------------ metrics
def test_topk_agrees_with_sklearn():
    torch.manual_seed(0)
    scores, labels = torch.randn(37, 7), torch.randint(0, 7, (37,))
    metrics = classification_metrics(scores, labels, topk=(1, 3, 5))
    for k in (1, 3, 5):
        assert metrics[f"top{k}"] == pytest.approx(top_k_accuracy_score(labels, scores, k=k, labels=range(7)))
    expected = balanced_accuracy_score(labels, scores.argmax(1))
    assert metrics["mean_per_class_accuracy"] == pytest.approx(expected)


def test_topk_is_capped_at_the_number_of_classes():
    torch.manual_seed(1)
    metrics = classification_metrics(torch.randn(11, 3), torch.randint(0, 3, (11,)))
    assert metrics["top5"] == 1.0


def test_separable_features_give_100_percent():
    torch.manual_seed(2)
    classifier = nn.functional.normalize(torch.randn(9, 5), dim=0)  # (P, C)
    labels = torch.randint(0, 5, (23,))
    images = nn.functional.normalize(classifier.t()[labels] + 0.01 * torch.randn(23, 9), dim=-1)  # (N, P)
    metrics = zero_shot_metrics(images, classifier, labels)
    assert metrics["top1"] == metrics["mean_per_class_accuracy"] == 1.0


def test_random_features_give_chance():
    torch.manual_seed(3)
    classifier = nn.functional.normalize(torch.randn(16, 10), dim=0)
    images = nn.functional.normalize(torch.randn(3000, 16), dim=-1)
    metrics = zero_shot_metrics(images, classifier, torch.randint(0, 10, (3000,)))
    assert metrics["top1"] == pytest.approx(0.1, abs=0.03)  # std of the estimate is ~0.0055
    assert metrics["top5"] == pytest.approx(0.5, abs=0.05)


def test_bad_labels_are_rejected():
    with pytest.raises(ValueError, match="labels must lie in"):
        classification_metrics(torch.randn(4, 3), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="do not fit"):
        zero_shot_metrics(torch.randn(4, 5), torch.randn(6, 3), torch.zeros(4, dtype=torch.long))


# ----------------------------------------------------------------------------------------- encoders
def test_classifier_is_the_renormalised_mean_of_prompt_embeddings(tiny_model_and_tokenizer):
    model, tokenizer = tiny_model_and_tokenizer
    classnames, templates = ["cat", "dog", "small bird"], ["a photo of a {}.", "a blurry {}.", "the big {}"]
    classifier = build_zero_shot_classifier(model, tokenizer, classnames, templates, batch_size=4, progress=False)
    assert classifier.shape == (7, 3)
    model.eval()  # no dropout in the reference either
    with torch.no_grad():
        for c, name in enumerate(classnames):
            per_template = []
            for template in templates:
                tokens = tokenizer([template.format(name)], return_tensors="pt")
                embedding = model.get_text_features(**tokens).pooler_output[0]
                per_template.append(embedding / embedding.norm())
            mean = torch.stack(per_template).mean(0)
            torch.testing.assert_close(classifier[:, c], mean / mean.norm(), atol=1e-5, rtol=1e-5)


def test_encoders_match_forward_and_accept_plain_tensors(tiny_model_and_tokenizer):
    model, tokenizer = tiny_model_and_tokenizer
    model.train()
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)) for _ in range(5)]
    images[2] = images[2].convert("L")  # grayscale files are converted to RGB

    def preprocess(batch):  # (B, 3, 30, 30) in [0, 1]; a mapping, as image processors return
        pixels = [torch.from_numpy(np.array(image, dtype=np.float32) / 255).permute(2, 0, 1) for image in batch]
        return {"pixel_values": torch.stack(pixels)}

    texts = ["a cat", "a photo of the big dog .", "bird", "a small cat", "the dog"]
    image_features = encode_images(model, images, preprocess, batch_size=2, progress=False)
    text_features = encode_texts(model, tokenizer, texts, batch_size=3, progress=False)
    assert model.training  # the caller's mode is given back

    model.eval()
    with torch.no_grad():
        tokens = tokenizer(texts, padding=True, return_tensors="pt")
        output = model(pixel_values=preprocess([i.convert("RGB") for i in images])["pixel_values"], **tokens)
    torch.testing.assert_close(image_features, output.image_embeds, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(text_features, output.text_embeds, atol=1e-5, rtol=1e-5)

    # The trainer passes uint8 tensors and its own transform.
    uint8 = torch.stack([torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1) for image in images])
    from_tensors = encode_images(model, uint8, lambda batch: torch.stack(batch).float() / 255, progress=False)
    torch.testing.assert_close(from_tensors, image_features)

    plain = PlainTensorFeatures(model)
    torch.testing.assert_close(encode_images(plain, images, preprocess, batch_size=4, progress=False), image_features)
    torch.testing.assert_close(encode_texts(plain, tokenizer, texts, progress=False), text_features)


# ------------------------------------------------------------------------------------ data, prompts
def test_image_folder_with_display_names_in_folders_json_order(tmp_path):
    root = tmp_path / "pets"
    folders = ["n02", "n01"]  # class order of folders.json differs from the sorted folder order
    for k, folder in enumerate(folders):
        (root / "test" / folder).mkdir(parents=True)
        for i in range(k + 2):
            Image.new("RGB", (7, 5), (40 * i, 0, 0)).save(root / "test" / folder / f"{i}.png")
    (root / "classnames.json").write_text(json.dumps(["dog", "cat"]))
    (root / "folders.json").write_text(json.dumps(folders))
    data = load_labelled_images(root / "test")
    # labels are the sorted folder names: 0 = n01 (3 images, "cat"), 1 = n02 (2 images, "dog").
    assert data.classnames == ["cat", "dog"]
    assert data.labels.tolist() == [0, 0, 0, 1, 1] and data.num_classes == 2
    assert len(data.images) == 5
    assert load_labelled_images(root, split="test").labels.tolist() == [0, 0, 0, 1, 1]  # a split folder

    with pytest.raises(ValueError, match=r"has no split folder 'validation'; its folders are \['n01', 'n02'\]"):
        load_labelled_images(root / "test", split="validation")
    with pytest.raises(ValueError, match=r"holds split folders \['test'\], not class folders: choose one"):
        load_labelled_images(root)
    (root / "classnames.json").write_text(json.dumps(["dog"]))
    with pytest.raises(ValueError, match="classnames.json"):
        load_labelled_images(root / "test")


def ilsvrc_folder(root, per_class: int = 4) -> dict:
    """ImageNet's validation layout: `<wnid>/ILSVRC2012_val_<8 digits>.JPEG`, upper-case extension."""
    files = {}
    for k, wnid in enumerate(["n01440764", "n01443537", "n01484850"]):
        (root / wnid).mkdir(parents=True)
        for i in range(per_class):
            number = k * per_class + i + 1
            path = root / wnid / f"ILSVRC2012_val_{number:08d}.JPEG"
            Image.new("RGB", (9, 7), (30 * k, 20 * i, 90)).save(path, "JPEG")
            files[path] = k
    return files


def test_a_class_folder_is_exactly_its_files_whatever_their_names(tmp_path):
    """`datasets`' imagefolder kept 134 of 1,000 such files: "val" in a file name read as a split."""
    files = ilsvrc_folder(tmp_path / "val")
    (tmp_path / "val" / "n01443537" / "LOC_synset_mapping.txt").write_text("not an image")
    (tmp_path / "val" / "n01484850" / "more").mkdir()
    extra = tmp_path / "val" / "n01484850" / "more" / "ILSVRC2012_val_00000099.png"
    Image.new("RGB", (9, 7)).save(extra)  # nested and of another format: still its class's image
    files[extra] = 2
    data = load_labelled_images(tmp_path / "val")
    assert sorted(map(str, data.images.paths)) == sorted(map(str, files))
    assert {str(p): label for p, label in zip(data.images.paths, data.labels.tolist())} == {
        str(p): k for p, k in files.items()
    }
    assert data.classnames == ["n01440764", "n01443537", "n01484850"] and data.skipped == []
    assert data.describe("val") == "13 images in 3 classes from val"


def test_a_corrupt_image_is_skipped_and_named_or_raises(tmp_path):
    files = ilsvrc_folder(tmp_path / "val")
    broken = next(iter(files))
    broken.write_bytes(broken.read_bytes()[:40])  # a truncated JPEG
    data = load_labelled_images(tmp_path / "val")
    assert len(data.images) == len(files) - 1 and broken not in data.images.paths
    assert data.labels.tolist() == [k for path, k in files.items() if path != broken]
    (skipped,) = data.skipped
    assert skipped.startswith(f"{broken}: ") and "skipped" in data.describe("val")
    with pytest.raises(ValueError, match=f"cannot read image {broken}"):
        load_labelled_images(tmp_path / "val", on_bad_image="raise")


def test_empty_and_unusable_folders_are_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no images in .*empty: expected <class>/<image> files \(0 class folders\)"):
        load_labelled_images(tmp_path / "empty")
    (tmp_path / "classes" / "cat").mkdir(parents=True)
    (tmp_path / "classes" / "cat" / "notes.txt").write_text("no image here")
    with pytest.raises(ValueError, match=r"no images in .*classes"):
        load_labelled_images(tmp_path / "classes")
    Image.new("RGB", (3, 3)).save(tmp_path / "classes" / "stray.png")
    with pytest.raises(ValueError, match="1 images outside class folders"):
        load_labelled_images(tmp_path / "classes")


def test_shared_cifar10_matches_its_clip_prompts():
    data = load_labelled_images(CIFAR10 / "test")
    assert len(data.images) == 1000
    assert torch.bincount(data.labels).tolist() == [100] * 10
    assert data.classnames == list(load_prompts("cifar10").classnames)


def test_templates():
    assert len(get_templates()) == 80  # CLIP's ImageNet ensemble is the default
    assert len(load_prompts("imagenet").classnames) == 1000
    assert get_templates("CIFAR10") == load_prompts("cifar10").templates
    assert all(t.count("{}") == 1 for t in get_templates("cifar10"))
    with pytest.raises(ValueError, match="no zero-shot prompts"):
        load_prompts("no-such-set")
    with pytest.raises(ValueError, match="exactly one"):
        build_zero_shot_classifier(None, None, ["cat"], ["a photo"])


def test_templates_may_use_clip_benchmarks_c_placeholder(tiny_model_and_tokenizer):
    """CLIP_benchmark writes `{c}` where openai/CLIP writes `{}`: both give the same classifier."""
    from modeling_mcd.evaluation.templates import check_templates

    model, tokenizer = tiny_model_and_tokenizer
    with_c = ["a photo of a {c}.", "a blurry {c}", "the big {c}"]
    braces = [template.replace("{c}", "{}") for template in with_c]
    classifier = build_zero_shot_classifier(model, tokenizer, ["cat", "dog"], with_c, progress=False)
    expected = build_zero_shot_classifier(model, tokenizer, ["cat", "dog"], braces, progress=False)
    torch.testing.assert_close(classifier, expected, rtol=0, atol=0)
    cifar10 = json.loads((SHARED_DATA / "prompts" / "clip_benchmark_en_zeroshot_templates.json").read_text())["cifar10"]
    check_templates(cifar10)
    for bad in ["a {c} or a {}", "a {c} and a {c}", "no placeholder", "{}{}"]:
        with pytest.raises(ValueError, match=r"exactly one '\{\}' or '\{c\}'"):
            check_templates([bad])


def test_fewer_than_two_classes_or_images_is_no_task(tmp_path):
    """Top-1 over one class is 100 % whatever the model: no chance level to compare with."""
    (tmp_path / "one" / "cat").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (5, 5), (i, 0, 0)).save(tmp_path / "one" / "cat" / f"{i}.png")
    with pytest.raises(ValueError, match=r"1 class\(es\): a task needs at least 2 classes"):
        load_labelled_images(tmp_path / "one")
    (tmp_path / "two" / "cat").mkdir(parents=True)
    (tmp_path / "two" / "dog").mkdir(parents=True)
    Image.new("RGB", (5, 5)).save(tmp_path / "two" / "cat" / "0.png")
    (tmp_path / "two" / "dog" / "0.png").write_bytes(b"not a png")  # skipped: one image is left
    with pytest.raises(ValueError, match=r"only 1 image\(s\) can be used \(1 unreadable left out\)"):
        load_labelled_images(tmp_path / "two")
    import datasets

    single = datasets.Dataset.from_dict(
        {"image": [Image.new("RGB", (5, 5))] * 3, "label": [0, 0, 0]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["cat"])}),
    )
    with pytest.raises(ValueError, match=r"1 class\(es\): a task needs at least 2 classes"):
        load_labelled_images(single)


def test_an_extreme_aspect_ratio_is_cropped_before_the_resize(tmp_path):
    """A 1,000,000 x 1 image resized to a 224 shortest edge would need 224,000,000 x 224 pixels."""
    from transformers import CLIPImageProcessor

    for name in ("wide", "square"):
        (tmp_path / name).mkdir()
    Image.new("RGB", (1_000_000, 1), (200, 10, 10)).save(tmp_path / "wide" / "line.png")
    Image.new("RGB", (4, 1_000), (10, 200, 10)).save(tmp_path / "wide" / "tall.png")
    Image.new("RGB", (30, 20), (10, 10, 200)).save(tmp_path / "square" / "0.png")
    data = load_labelled_images(tmp_path)
    assert len(data.images) == 3 and data.skipped == []
    sizes = [data.images[i].size for i in range(3)]
    assert all(max(size) <= 4 * min(size) for size in sizes), sizes  # checked before any resize runs
    assert sizes[0] == (30, 20)  # an ordinary image (class "square" sorts first) is untouched
    processor = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    pixels = processor([data.images[i] for i in range(3)], return_tensors="pt")["pixel_values"]
    assert pixels.shape == (3, 3, 224, 224)


def test_a_decompression_bomb_in_an_evaluation_folder_is_skipped_and_named(tmp_path):
    from _bad_corpus import png_bomb

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (5, 5)).save(tmp_path / name / "0.png")
    # 81 million pixels: under PIL's own guard (89 million), over the 67 million training refuses.
    (tmp_path / "a" / "bomb.png").write_bytes(png_bomb(9_000, 9_000))
    data = load_labelled_images(tmp_path)
    assert len(data.images) == 2 and len(data.skipped) == 1 and "decompression_bomb" in data.skipped[0]
    with pytest.raises(ValueError, match="decompression_bomb"):
        load_labelled_images(tmp_path, on_bad_image="raise")


def test_the_images_of_a_dataset_are_cropped_to_a_sane_aspect_ratio_too():
    import datasets

    images = [Image.new("RGB", (200_000, 1), (200, 0, 0)), Image.new("RGB", (30, 20))]
    data = datasets.Dataset.from_dict(
        {"image": images, "label": [0, 1]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])}),
    )
    labelled = load_labelled_images(data)
    assert [image.size for image in labelled.images] == [(4, 1), (30, 20)]
    assert len(labelled.images) == 2 and labelled.images[1:][0].size == (30, 20)
