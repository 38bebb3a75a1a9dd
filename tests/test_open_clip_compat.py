"""`modeling_mcd.open_clip_compat.load`: a saved MCD folder as open_clip's `(model, preprocess, tokenizer)`; and
CLIP_benchmark's zero-shot classification and retrieval, written here as CLIP_benchmark runs them (its
`zeroshot_classification` and `zeroshot_retrieval` modules), giving `mcd eval`'s metrics on the same data."""

import json

import pytest
import torch
import torch.nn.functional as F
from _wds_helpers import COLOURS, coloured_image, read_wds_samples, save_tiny_mcd_model, write_classification_wds
from PIL import Image
from sklearn.metrics import balanced_accuracy_score
from torch.utils.data import DataLoader

from modeling_mcd.cli.main import main
from modeling_mcd.evaluation import (
    build_zero_shot_classifier,
    encode_images,
    load_labelled_images,
    load_model_and_processor,
)

CLASSES = ["red", "green", "blue", "yellow"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_mcd_model(tmp_path_factory.mktemp("model") / "mcd")


def mcd_eval(tmp_path, task, model_dir, data):
    output = tmp_path / f"{task}.json"
    argv = ["eval", task, "--model", str(model_dir), "--data", str(data), "--device", "cpu", "--batch-size", "4"]
    assert main([*argv, "--output-json", str(output)]) == 0
    return json.loads(output.read_text())["metrics"]


def test_load_gives_open_clips_three_parts(model_dir):
    from modeling_mcd.open_clip_compat import load

    model, preprocess, tokenizer = load(str(model_dir))
    reference, reference_preprocess, reference_tokenizer = load_model_and_processor(str(model_dir))
    image = coloured_image(COLOURS["red"], seed=0, size=(41, 23))  # not square: resized, then centre-cropped
    pixels = preprocess(image)
    assert pixels.shape == (3, 30, 30) and pixels.dtype == torch.float32
    torch.testing.assert_close(pixels, reference_preprocess([image])[0])

    texts = ["a red square", "a photo of the big blue circle ."]
    tokens = tokenizer(texts)
    assert tokens.dtype == torch.long and tokens.shape == (2, 40)  # the text tower's 40 positions
    assert tokenizer("a cat").shape == (1, 40) and tokenizer(texts, context_length=12).shape == (2, 12)
    with torch.no_grad():
        image_features = model.encode_image(pixels[None])
        text_features = model.encode_text(tokens)
        expected_image = reference.get_image_features(pixel_values=pixels[None]).pooler_output
        dynamic = reference_tokenizer(texts, padding=True, return_tensors="pt")  # padded to the longest text only
        expected_text = reference.get_text_features(**dynamic).pooler_output
        torch.testing.assert_close(image_features, expected_image)  # unnormalised, as open_clip's
        torch.testing.assert_close(text_features, expected_text, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.encode_text(tokenizer(texts, context_length=12)), text_features,
                                   atol=1e-5, rtol=1e-5)  # fmt: skip
        assert not torch.allclose(image_features.norm(dim=-1), torch.ones(1))
        torch.testing.assert_close(model.encode_image(pixels[None], normalize=True).norm(dim=-1), torch.ones(1))
        assert model.logit_scale.shape == () and model.logit_scale.exp() == reference.get_logit_scale()
        image_embeds, text_embeds, scale = model(pixels[None], tokens)
        torch.testing.assert_close(image_embeds @ text_embeds.t(), F.normalize(expected_image) @ F.normalize(
            expected_text).t(), atol=1e-5, rtol=1e-5)  # fmt: skip


def test_the_attention_mask_is_rebuilt_from_the_padding():
    from modeling_mcd.open_clip_compat import attention_mask_from_padding

    bert = torch.tensor([[101, 7, 8, 102, 0, 0], [101, 7, 8, 9, 10, 102]])
    assert attention_mask_from_padding(bert, 0).tolist() == [[1, 1, 1, 1, 0, 0], [1] * 6]
    clip = torch.tensor([[49406, 320, 49407, 49407, 49407], [49406, 320, 321, 322, 49407]])  # pad = end of text
    assert attention_mask_from_padding(clip, 49407, keep_first_pad=True).tolist() == [[1, 1, 1, 0, 0], [1] * 5]
    left = torch.tensor([[0, 0, 101, 7, 102]])
    assert attention_mask_from_padding(left, 0, padding_side="left").tolist() == [[0, 0, 1, 1, 1]]


def test_clip_benchmarks_zero_shot_loop_gives_mcd_evals_metrics(model_dir, tmp_path):
    """CLIP_benchmark's `zero_shot_classifier` and `evaluate` on the parts of `load`, against `mcd eval zero-shot` on
    the same webdataset folder."""
    from modeling_mcd.open_clip_compat import load

    root = tmp_path / "wds_colours"
    write_classification_wds(root, CLASSES, per_class=4)
    expected = mcd_eval(tmp_path, "zero-shot", model_dir, root)

    model, preprocess, tokenizer = load(str(model_dir), device="cpu")
    classnames = (root / "classnames.txt").read_text().splitlines()
    templates = (root / "zeroshot_classification_templates.txt").read_text().splitlines()
    dataset = [(preprocess(image), int(label)) for image, label in read_wds_samples(root / "test")]
    with torch.no_grad():
        weights = []
        for classname in classnames:
            texts = tokenizer([template.format(c=classname) for template in templates]).to("cpu")
            class_embedding = F.normalize(model.encode_text(texts), dim=-1).mean(dim=0)
            weights.append(class_embedding / class_embedding.norm())
        classifier = torch.stack(weights, dim=1)
        logits, target = [], []
        for images, labels in DataLoader(dataset, batch_size=5):
            image_features = F.normalize(model.encode_image(images), dim=-1)
            logits.append(100.0 * image_features @ classifier)
            target.append(labels)
    logits, target = torch.cat(logits), torch.cat(target)
    pred = logits.argmax(dim=1)
    top = logits.topk(min(5, len(classnames)), dim=1).indices  # CLIP_benchmark reports acc5 only from 5 classes
    metrics = {
        "top1": (pred == target).float().mean().item(),
        "top5": (top == target[:, None]).any(dim=1).float().mean().item(),
        "mean_per_class_accuracy": balanced_accuracy_score(target, pred),
    }
    for name, value in metrics.items():
        assert expected[name] == pytest.approx(value, abs=1e-6), name
    assert expected["num_samples"] == len(target) == 16

    # The same classifier and image features as mcd eval's, so the same logits, not only the same scores.
    reference, reference_preprocess, reference_tokenizer = load_model_and_processor(str(model_dir))
    library = build_zero_shot_classifier(reference, reference_tokenizer, classnames, templates, progress=False)
    torch.testing.assert_close(classifier, library, atol=1e-5, rtol=1e-5)
    data = load_labelled_images(root)  # the images as mcd eval reads them from the shards
    image_features = encode_images(reference, data.images, reference_preprocess, progress=False)
    torch.testing.assert_close(logits, 100.0 * image_features @ library, atol=1e-4, rtol=1e-5)


def recall_at_k(scores, positive_pairs, k):
    """CLIP_benchmark's `recall_at_k`: the fraction of each row's positives among its top k."""
    nb_texts, nb_images = scores.shape
    topk_indices = torch.topk(scores, k, dim=1)[1]
    nb_positive = positive_pairs.sum(dim=1)
    topk_indices_onehot = F.one_hot(topk_indices, num_classes=nb_images)
    nb_true_positive = (topk_indices_onehot * positive_pairs.view(nb_texts, 1, nb_images)).sum(dim=(1, 2))
    return nb_true_positive / nb_positive


def test_clip_benchmarks_retrieval_loop_gives_mcd_evals_metrics(model_dir, tmp_path):
    """CLIP_benchmark's `zeroshot_retrieval.evaluate` on the parts of `load`, against `mcd eval retrieval` on the same
    captions file (4 images, 3 captions each)."""
    from modeling_mcd.open_clip_compat import load

    (tmp_path / "images").mkdir()
    rows = []
    for i, name in enumerate(["red", "green", "blue", "red"]):
        coloured_image(COLOURS[name], seed=i).save(tmp_path / "images" / f"{i}.png")
        captions = [f"a {name} square", f"a photo of a {name} circle", f"the {name} picture"]
        rows.append({"file_name": f"images/{i}.png", "captions": captions})
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    expected = mcd_eval(tmp_path, "retrieval", model_dir, tmp_path / "captions.jsonl")

    model, preprocess, tokenizer = load(str(model_dir))
    dataset = [(preprocess(Image.open(tmp_path / row["file_name"])), row["captions"]) for row in rows]
    images_emb, texts_emb, texts_image_index = [], [], []
    loader = DataLoader(dataset, batch_size=3, collate_fn=lambda batch: tuple(zip(*batch)))
    start = 0
    for batch_images, batch_texts in loader:
        indices = range(start, start + len(batch_images))
        start += len(batch_images)
        tokens = tokenizer([text for texts in batch_texts for text in texts])
        texts_image_index += [index for index, texts in zip(indices, batch_texts) for _ in texts]
        with torch.no_grad():
            images_emb.append(F.normalize(model.encode_image(torch.stack(batch_images)), dim=-1))
            texts_emb.append(F.normalize(model.encode_text(tokens), dim=-1))
    scores = torch.cat(texts_emb) @ torch.cat(images_emb).t()  # (texts, images)
    positive_pairs = torch.zeros_like(scores, dtype=bool)
    positive_pairs[torch.arange(len(scores)), texts_image_index] = True
    for k in (1, 5, 10):
        # topk needs k <= the candidates; R@k of mcd eval is 1 there anyway (every rank is <= k)
        image_retrieval = (recall_at_k(scores, positive_pairs, min(k, scores.shape[1])) > 0).float().mean().item()
        text_retrieval = (recall_at_k(scores.T, positive_pairs.T, min(k, scores.shape[0])) > 0).float().mean().item()
        assert expected[f"text_to_image_R@{k}"] == pytest.approx(image_retrieval, abs=1e-6)
        assert expected[f"image_to_text_R@{k}"] == pytest.approx(text_retrieval, abs=1e-6)
    assert (expected["num_images"], expected["num_texts"]) == (4, 12)
