# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""`evaluate` module: top-k and mean per-class accuracy of zero-shot (or any) classification.

A local script, loaded with `evaluate.load(<this folder>)` or `modeling_mcd.evaluation.load_metric`: `evaluate`
copies it into its dynamic-modules cache, so it imports the package absolutely, never relatively.
"""

from __future__ import annotations

import datasets
import evaluate
import torch

from modeling_mcd.evaluation.evaluate_metrics.inputs import as_score_matrix
from modeling_mcd.evaluation.metrics import check_labels, classification_metrics

_DESCRIPTION = """
Top-k accuracy (k capped at the number of classes, as in CLIP's evaluation) and mean per-class accuracy
(top-1 recall averaged over the classes present in the references). Predictions are either one row of
class scores per sample (logits or probabilities, higher is more likely), which gives every top-k, or one
predicted class id per sample, which gives top-1 and mean per-class accuracy only. The numbers are those
of `modeling_mcd.evaluation.classification_metrics`, which this module calls.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[float]]` of shape `(N, C)` or `list[int]` of shape `(N,)`): class scores of each
        sample, or its predicted class id. Scores are stored as float32.
    references (`list[int]` of shape `(N,)`): the true class of each sample, in [0, C).
    topk (`tuple[int]`, *optional*): the k of each `top{k}`; defaults to `(1, 5)` for scores and `(1,)` for
        predicted ids (which cannot give k > 1).
    num_classes (`int`, *optional*): C for predicted ids; defaults to the largest id seen plus one.
        Ignored for scores, whose row length is C.

Returns:
    `top{k}` for each k and `mean_per_class_accuracy` (fractions in [0, 1]), and `num_samples`.

Examples:
    >>> metric = load_metric("zero_shot_accuracy")
    >>> metric.compute(predictions=[[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], references=[1, 1, 1])
    {'top1': 0.6666666666666666, 'top5': 1.0, 'mean_per_class_accuracy': 0.6666666666666666, 'num_samples': 3}
"""

_CITATION = """
@inproceedings{radford2021learning,
  title={Learning Transferable Visual Models From Natural Language Supervision},
  author={Radford, Alec and Kim, Jong Wook and Hallacy, Chris and Ramesh, Aditya and Goh, Gabriel and
          Agarwal, Sandhini and Sastry, Girish and Askell, Amanda and Mishkin, Pamela and Clark, Jack and
          Krueger, Gretchen and Sutskever, Ilya},
  booktitle={ICML},
  year={2021}
}
"""


class ZeroShotAccuracy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            # `evaluate` picks the first schema that the first example fits: a score row, else an id.
            features=[
                datasets.Features(
                    {"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}
                ),
                datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            ],
            reference_urls=["https://arxiv.org/abs/2103.00020"],
        )

    def _compute(
        self,
        predictions: list[list[float]] | list[int],
        references: list[int],
        topk: tuple[int, ...] | None = None,
        num_classes: int | None = None,
    ) -> dict:
        labels = torch.as_tensor(references)  # (N,)
        if predictions and isinstance(predictions[0], int):
            return self._compute_from_ids(torch.as_tensor(predictions), labels, topk, num_classes)
        scores = as_score_matrix(predictions)  # (N, C)
        return classification_metrics(scores, labels, topk=tuple(topk or (1, 5)))

    @staticmethod
    def _compute_from_ids(
        predicted: torch.Tensor, labels: torch.Tensor, topk: tuple[int, ...] | None, num_classes: int | None
    ) -> dict:
        topk = tuple(topk or (1,))
        if max(topk) > 1:
            raise ValueError(f"topk {topk} needs class scores as predictions; predicted ids give top1 only")
        if num_classes is None:
            num_classes = int(max(predicted.max(), labels.max() if labels.numel() else 0)) + 1
        predicted = check_labels(predicted, predicted.shape[0], num_classes, name="predictions")
        # A one-hot score row ranks the predicted id first (uniquely for C >= 2), so the shared function's
        # top-1 and per-class accuracy are those of the ids.
        scores = torch.nn.functional.one_hot(predicted, num_classes).float()  # (N, C)
        return classification_metrics(scores, labels, topk=topk)
