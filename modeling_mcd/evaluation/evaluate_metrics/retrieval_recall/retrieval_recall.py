# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""`evaluate` module: image-text retrieval recall at K and ranks (Flickr30k / COCO protocol).

A local script, loaded with `evaluate.load(<this folder>)` or `modeling_mcd.evaluation.load_metric`: `evaluate`
copies it into its dynamic-modules cache, so it imports the package absolutely, never relatively.
"""

from __future__ import annotations

import datasets
import evaluate
import torch

from modeling_mcd.evaluation.evaluate_metrics.inputs import as_score_matrix
from modeling_mcd.evaluation.retrieval import RECALL_AT, retrieval_metrics

_DESCRIPTION = """
Image-text retrieval in both directions from a caption-by-image similarity matrix. One example is one
caption: its prediction is its similarity to every image (one row of the matrix, the same image order in
every row) and its reference is the index of its own image. Every image needs at least one caption.
Text->image: each caption's rank is that of its image. Image->text: an image's rank is that of its
best-ranked caption (a hit if ANY caption is in the top K). Ranks are 1-based and count the candidates
scored strictly higher. The numbers are those of `modeling_mcd.evaluation.retrieval_metrics`, which this
module calls.

Cost: the matrix is stored (float32) and scored through `retrieval_metrics` with the identity as image
embeddings, O(T * I^2) on CPU. For COCO-sized sets call `retrieval_metrics` on the embeddings directly.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[float]]` of shape `(T, I)`): each caption's similarity to each image (e.g. the
        rows of `logits_per_text`, or of normalised text embeddings @ image embeddings.T). Must be finite.
    references (`list[int]` of shape `(T,)`): each caption's image, in [0, I).
    recall_at (`tuple[int]`, *optional*, defaults to `(1, 5, 10)`): the K of each `R@K`.
    chunk_size (`int`, *optional*, defaults to 1024): query rows scored at once.

Returns:
    `image_to_text_R@{k}`, `text_to_image_R@{k}` (fractions), `*_mean_rank`, `*_median_rank`,
    `mean_recall` (the average of all R@K), `num_images` and `num_texts`.

Examples:
    >>> metric = load_metric("retrieval_recall")
    >>> metric.compute(predictions=[[0.9, 0.1], [0.2, 0.3], [0.8, 0.4]], references=[0, 1, 1], recall_at=(1,))
    {'image_to_text_R@1': 1.0, 'image_to_text_mean_rank': 1.0, 'image_to_text_median_rank': 1.0,
     'text_to_image_R@1': 0.6666666666666666, 'text_to_image_mean_rank': 1.3333333333333333,
     'text_to_image_median_rank': 1.0, 'mean_recall': 0.8333333333333333, 'num_images': 2, 'num_texts': 3}
"""

_CITATION = """
@inproceedings{karpathy2015deep,
  title={Deep Visual-Semantic Alignments for Generating Image Descriptions},
  author={Karpathy, Andrej and Fei-Fei, Li},
  booktitle={CVPR},
  year={2015}
}
"""


class RetrievalRecall(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}
            ),
            reference_urls=["https://arxiv.org/abs/1412.2306"],
        )

    def _compute(
        self,
        predictions: list[list[float]],
        references: list[int],
        recall_at: tuple[int, ...] = RECALL_AT,
        chunk_size: int = 1024,
    ) -> dict:
        similarity = as_score_matrix(predictions)  # (T, I)
        if not torch.isfinite(similarity).all():
            row = int(torch.nonzero(~torch.isfinite(similarity).all(dim=1))[0])
            raise ValueError(f"predictions must be finite similarities; row {row} is not")
        # retrieval_metrics scores `image_features @ text_features.T` one way and its transpose the other. With
        # the identity as image embeddings and the similarity rows as text embeddings both products are the
        # similarity matrix exactly (every other term of each dot product is an exact 0; hence the finite
        # check), so both directions come from the one implementation.
        identity = torch.eye(similarity.shape[1], dtype=similarity.dtype)  # (I, I)
        return retrieval_metrics(
            identity, similarity, torch.as_tensor(references), recall_at=tuple(recall_at), chunk_size=chunk_size
        )
