# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Linear probe on frozen image embeddings (CLIP, Radford et al. 2021, App. A.3): scikit-learn's
L-BFGS logistic regression, its L2 strength chosen on a validation split, then refit on train + val."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from .metrics import check_labels, classification_metrics

#: Inverse L2 strengths tried on the validation split: CLIP sweeps 1e-6..1e6 (log-spaced); one per decade here.
DEFAULT_C_GRID = tuple(float(c) for c in np.logspace(-6, 6, 13))


def _numpy(features: torch.Tensor, labels: torch.Tensor, name: str) -> tuple[np.ndarray, np.ndarray]:
    features = torch.as_tensor(features)
    if features.dim() != 2:
        raise ValueError(f"{name}_features must have shape (N, P), got {tuple(features.shape)}")
    labels = check_labels(labels, features.shape[0], num_classes=None, name=f"{name}_labels")
    return features.detach().cpu().double().numpy(), labels.cpu().numpy()


def _fit(features: np.ndarray, labels: np.ndarray, c: float, max_iter: int, seed: int):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    classifier = LogisticRegression(C=c, solver="lbfgs", max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings():
        # Weakly regularised fits on separable features stop at max_iter; the validation split judges them.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return classifier.fit(features, labels)


def linear_probe_metrics(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    val_features: torch.Tensor | None = None,
    val_labels: torch.Tensor | None = None,
    val_fraction: float = 0.2,
    c_grid: tuple[float, ...] = DEFAULT_C_GRID,
    max_iter: int = 1000,
    seed: int = 0,
) -> dict:
    r"""
    Fit a logistic-regression probe on frozen features and report its test accuracy.

    Args:
        train_features (`torch.Tensor` of shape `(N, P)`) and train_labels (`(N,)`): the probe's data.
        test_features (`torch.Tensor` of shape `(M, P)`) and test_labels (`(M,)`): held-out data.
        val_features, val_labels (*optional*): the split that picks `C`; when missing, a stratified
            `val_fraction` of the training data is held out for it.
        val_fraction (`float`, *optional*, defaults to 0.2)
        c_grid (`tuple[float]`, *optional*): inverse L2 strengths to try, defaults to [`DEFAULT_C_GRID`].
        max_iter (`int`, *optional*, defaults to 1000): L-BFGS iterations.
        seed (`int`, *optional*, defaults to 0): seeds the validation split.

    Returns:
        `dict` with the test `top1`, `top5` (capped at the number of classes), `mean_per_class_accuracy`,
        the chosen `C`, its `val_top1`, and `num_samples` (test).
    """
    from sklearn.model_selection import train_test_split

    if not c_grid:
        raise ValueError("c_grid must hold at least one value")
    x_train, y_train = _numpy(train_features, train_labels, "train")
    x_test, y_test = _numpy(test_features, test_labels, "test")
    if (val_features is None) != (val_labels is None):
        raise ValueError("give both val_features and val_labels, or neither")
    if val_features is None:
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
        x_fit, x_val, y_fit, y_val = train_test_split(
            x_train, y_train, test_size=val_fraction, stratify=y_train, random_state=seed
        )
    else:
        x_fit, y_fit = x_train, y_train
        x_val, y_val = _numpy(val_features, val_labels, "val")
    for name, x in (("test", x_test), ("val", x_val)):
        if x.shape[1] != x_train.shape[1]:
            raise ValueError(f"{name} features have dimension {x.shape[1]}, train features {x_train.shape[1]}")

    val_accuracy = {c: _fit(x_fit, y_fit, c, max_iter, seed).score(x_val, y_val) for c in c_grid}
    best_c = max(c_grid, key=lambda c: (val_accuracy[c], -c))  # ties: the stronger regularisation
    probe = _fit(np.concatenate([x_fit, x_val]), np.concatenate([y_fit, y_val]), best_c, max_iter, seed)

    # Scores over every class index, so test labels the probe never saw still count as misses.
    num_classes = int(max(y_test.max(), probe.classes_.max())) + 1
    scores = torch.full((len(x_test), num_classes), float("-inf"))  # (M, C)
    scores[:, torch.as_tensor(probe.classes_)] = torch.as_tensor(probe.predict_log_proba(x_test), dtype=torch.float)
    metrics = classification_metrics(scores, torch.as_tensor(y_test))
    metrics.update(C=best_c, val_top1=val_accuracy[best_c])
    return metrics


__all__ = ["DEFAULT_C_GRID", "linear_probe_metrics"]
