# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Linear probe: separable features give ~100%, noise gives chance, and the C sweep + refit equal the same
steps written out with scikit-learn in the test."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from modeling_mcd.evaluation import linear_probe_metrics


def clusters(num_per_class, num_classes, dim, spread, seed):
    """Gaussian blobs around random centres: (N, dim) features and (N,) labels."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=generator) * 3
    labels = torch.arange(num_classes).repeat_interleave(num_per_class)
    features = centres[labels] + spread * torch.randn(len(labels), dim, generator=generator)
    return features, labels


def test_separable_features_give_100_percent():
    train = clusters(20, 3, 5, spread=0.1, seed=0)
    test = clusters(7, 3, 5, spread=0.1, seed=0)  # same centres (same seed)
    metrics = linear_probe_metrics(*train, test[0] + 0.05 * torch.randn_like(test[0]), test[1])
    assert metrics["top1"] == metrics["mean_per_class_accuracy"] == 1.0
    assert metrics["val_top1"] == 1.0 and metrics["num_samples"] == 21


def test_noise_gives_chance():
    generator = torch.Generator().manual_seed(1)
    train_features, test_features = torch.randn(203, 7, generator=generator), torch.randn(600, 7, generator=generator)
    train_labels = torch.randint(0, 4, (203,), generator=generator)
    test_labels = torch.randint(0, 4, (600,), generator=generator)
    metrics = linear_probe_metrics(train_features, train_labels, test_features, test_labels)
    assert metrics["top1"] == pytest.approx(0.25, abs=0.06)  # std of the estimate is ~0.018


def test_sweep_and_refit_equal_sklearn_by_hand():
    train, val, test = (clusters(9, 4, 6, spread=2.5, seed=2 + i) for i in range(3))
    grid = (1e-3, 1e-1, 10.0)
    metrics = linear_probe_metrics(*train, *test, val_features=val[0], val_labels=val[1], c_grid=grid, max_iter=200)

    def fit(x, y, c):
        return LogisticRegression(C=c, max_iter=200, random_state=0).fit(x.double().numpy(), y.numpy())

    val_scores = [fit(*train, c).score(val[0].double().numpy(), val[1].numpy()) for c in grid]
    best = grid[int(np.argmax(val_scores))]
    probe = fit(torch.cat([train[0], val[0]]), torch.cat([train[1], val[1]]), best)
    assert metrics["C"] == best and metrics["val_top1"] == pytest.approx(max(val_scores))
    assert metrics["top1"] == pytest.approx(probe.score(test[0].double().numpy(), test[1].numpy()))


def test_class_missing_from_training_counts_as_a_miss():
    # The generator draws centres first, so both calls share the centres of classes 0 and 1.
    train = clusters(8, 2, 3, spread=0.1, seed=5)  # classes 0 and 1 only
    test_features, test_labels = clusters(4, 3, 3, spread=0.1, seed=5)  # class 2 appears only in the test set
    metrics = linear_probe_metrics(*train, test_features, test_labels, c_grid=(1.0,))
    assert metrics["top1"] == pytest.approx(8 / 12)  # classes 0 and 1 right, class 2 always wrong


def test_bad_inputs_are_rejected():
    features, labels = clusters(5, 2, 3, spread=0.1, seed=6)
    with pytest.raises(ValueError, match="test features have dimension 4"):
        linear_probe_metrics(features, labels, torch.randn(4, 4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="train_labels must have shape"):
        linear_probe_metrics(features, labels[:-1], features, labels)
    with pytest.raises(ValueError, match="both val_features and val_labels"):
        linear_probe_metrics(features, labels, features, labels, val_features=features)
