# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""The local `evaluate` modules: loaded offline through `evaluate.load`, they give exactly the numbers of the
torch functions they wrap (and of scikit-learn / naive loops), and `add_batch` accumulation equals one
`compute`."""

import socket

import evaluate
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from modeling_mcd.evaluation import (
    classification_metrics,
    load_metric,
    retrieval_metrics,
    zero_shot_metrics,
)
from modeling_mcd.evaluation.evaluate_metrics import AVAILABLE_METRICS, metric_path
from modeling_mcd.evaluation.evaluate_metrics.inputs import as_score_matrix


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any connection attempt fails the test: a local module must load with nothing fetched."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def load(tmp_path):
    """`load_metric` with this test's own cache folder, so parallel runs never share evaluate's lock files."""
    return lambda name: load_metric(name, cache_dir=str(tmp_path))


def zero_shot_inputs(num_samples: int, num_classes: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    image_features = torch.nn.functional.normalize(torch.randn(num_samples, 7, generator=generator), dim=-1)
    classifier = torch.nn.functional.normalize(torch.randn(7, num_classes, generator=generator), dim=0)
    labels = torch.randint(num_classes, (num_samples,), generator=generator)
    return image_features, classifier, labels


def retrieval_inputs(num_images: int, num_texts: int, seed: int = 0):
    """Small-integer embeddings: their dot products are exact in float32 whichever way round they are
    multiplied, and they tie often, which exercises the strict-rank rule."""
    generator = torch.Generator().manual_seed(seed)
    image_features = torch.randint(-2, 3, (num_images, 5), generator=generator).float()
    text_features = torch.randint(-2, 3, (num_texts, 5), generator=generator).float()
    extra = torch.randint(num_images, (num_texts - num_images,), generator=generator)
    text_to_image = torch.cat([torch.arange(num_images), extra])[torch.randperm(num_texts, generator=generator)]
    return image_features, text_features, text_to_image


def test_modules_load_from_the_package_folder():
    for name in AVAILABLE_METRICS:
        module = evaluate.load(metric_path(name), keep_in_memory=True)
        assert isinstance(module, evaluate.Metric)
        assert module.name == name
    with pytest.raises(ValueError, match="unknown metric 'accuracy'"):
        load_metric("accuracy")


@pytest.mark.parametrize("num_classes", [3, 9])  # 3 < 5: top5 is capped at C
def test_zero_shot_accuracy_equals_zero_shot_metrics(load, num_classes):
    image_features, classifier, labels = zero_shot_inputs(13, num_classes)
    expected = zero_shot_metrics(image_features, classifier, labels, topk=(1, 2, 5))
    logits = 100.0 * image_features @ classifier  # (N, C): what zero_shot_metrics ranks
    result = load("zero_shot_accuracy").compute(
        predictions=logits.tolist(), references=labels.tolist(), topk=(1, 2, 5)
    )
    assert result == expected


def test_zero_shot_accuracy_from_predicted_ids_matches_sklearn(load):
    _, _, labels = zero_shot_inputs(17, 6)
    predicted = torch.randint(6, (17,), generator=torch.Generator().manual_seed(1))
    result = load("zero_shot_accuracy").compute(predictions=predicted.tolist(), references=labels.tolist())
    assert result == {
        "top1": pytest.approx(accuracy_score(labels, predicted), abs=1e-12),
        "mean_per_class_accuracy": pytest.approx(balanced_accuracy_score(labels, predicted), abs=1e-12),
        "num_samples": 17,
    }
    # The ids of a score matrix's argmax give that matrix's top-1 numbers.
    image_features, classifier, labels = zero_shot_inputs(11, 5, seed=2)
    scores = image_features @ classifier
    from_scores = classification_metrics(scores, labels, topk=(1,))
    from_ids = load("zero_shot_accuracy").compute(
        predictions=scores.argmax(dim=1).tolist(), references=labels.tolist(), num_classes=5
    )
    assert from_ids == from_scores


def test_retrieval_recall_equals_retrieval_metrics_and_naive_ranks(load):
    image_features, text_features, text_to_image = retrieval_inputs(7, 19)
    expected = retrieval_metrics(image_features, text_features, text_to_image, recall_at=(1, 2, 5, 10))
    similarity = text_features @ image_features.t()  # (T, I)
    result = load("retrieval_recall").compute(
        predictions=similarity.tolist(), references=text_to_image.tolist(), recall_at=(1, 2, 5, 10)
    )
    assert result == expected

    # Naive strict ranks from the matrix, both directions.
    text_ranks = [1 + sum(s > row[g] for s in row) for row, g in zip(similarity.tolist(), text_to_image.tolist())]
    image_ranks = []
    for image in range(7):
        column = similarity[:, image].tolist()
        best = max(column[t] for t in range(19) if text_to_image[t] == image)
        image_ranks.append(1 + sum(s > best for s in column))
    assert result["text_to_image_R@1"] == pytest.approx(sum(r <= 1 for r in text_ranks) / 19)
    assert result["image_to_text_R@2"] == pytest.approx(sum(r <= 2 for r in image_ranks) / 7)
    assert result["text_to_image_mean_rank"] == pytest.approx(sum(text_ranks) / 19)
    assert result["image_to_text_mean_rank"] == pytest.approx(sum(image_ranks) / 7)


def test_add_batch_accumulation_equals_one_compute(load):
    image_features, classifier, labels = zero_shot_inputs(13, 9, seed=3)
    scores = (image_features @ classifier).tolist()
    one_shot = load("zero_shot_accuracy").compute(predictions=scores, references=labels.tolist())
    accumulated = load("zero_shot_accuracy")
    for start, stop in [(0, 5), (5, 6), (6, 13)]:  # uneven batches, one of a single row
        accumulated.add_batch(predictions=scores[start:stop], references=labels[start:stop].tolist())
    assert accumulated.compute() == one_shot

    image_features, text_features, text_to_image = retrieval_inputs(5, 11, seed=4)
    similarity = (text_features @ image_features.t()).tolist()
    one_shot = load("retrieval_recall").compute(predictions=similarity, references=text_to_image.tolist())
    accumulated = load("retrieval_recall")
    for start, stop in [(0, 4), (4, 5), (5, 11)]:
        accumulated.add_batch(predictions=similarity[start:stop], references=text_to_image[start:stop].tolist())
    assert accumulated.compute() == one_shot


def test_bad_inputs_raise_clear_errors(load):
    zero_shot = load("zero_shot_accuracy")
    with pytest.raises(ValueError, match="row 0 has 3, row 1 has 2"):
        zero_shot.compute(predictions=[[0.1, 0.2, 0.3], [0.1, 0.2]], references=[0, 1])
    with pytest.raises(ValueError, match="needs class scores"):
        zero_shot.compute(predictions=[0, 1], references=[0, 1], topk=(1, 5))
    with pytest.raises(ValueError, match=r"predictions must lie in \[0, 2\)"):
        zero_shot.compute(predictions=[0, 3], references=[0, 1], num_classes=2)
    with pytest.raises(ValueError, match="add_batch"):  # evaluate's own message when nothing was added
        zero_shot.compute()

    retrieval = load("retrieval_recall")
    with pytest.raises(ValueError, match="every image needs a caption"):
        retrieval.compute(predictions=[[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]], references=[0, 2])
    with pytest.raises(ValueError, match="row 1 is not"):
        retrieval.compute(predictions=[[0.1, 0.2], [float("nan"), 0.2]], references=[0, 1])


def test_as_score_matrix():
    rows = [[0.5, -1.0, 2.0], [3.0, 0.25, 1.0]]
    assert torch.equal(as_score_matrix(rows), torch.tensor(rows))
    with pytest.raises(ValueError, match="no scores were added"):
        as_score_matrix([], name="scores")
    with pytest.raises(ValueError, match="scores rows hold no scores"):
        as_score_matrix([[], []], name="scores")
    with pytest.raises(ValueError, match="row 0 has 3, row 1 has 1"):
        as_score_matrix([[0.5, -1.0, 2.0], [3.0]])
