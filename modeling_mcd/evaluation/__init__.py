# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Evaluation of CLIP-shaped dual encoders: zero-shot classification, image-text retrieval, linear probe,
compositionality (SugarCrepe).

Encoding (`features`) is separate from the metrics, which are pure functions on embedding tensors, so the
`mcd eval` command, the benchmarks and the trainer's in-training evaluation share them.

CLIP_benchmark's inputs are read too: its webdataset evaluation folders (`wds`), its `{c}` templates and its
`{dataset: [...]}` template and class name files (`prompt_files`); `modeling_mcd.open_clip_compat` gives a saved
model the open_clip interface its own loops call.

The metrics are torch functions on embeddings or score matrices, run on the accelerator and checked in the
tests against scikit-learn and naive loops. They are the only implementation: `mcd eval`, the benchmarks and
the Trainer's evaluation all call them.
"""

from ..data.lazy_images import LazyImages
from .compositionality import compositionality_metrics
from .data import (
    load_captioned_images,
    load_labelled_images,
    load_sugarcrepe,
    read_class_folder,
)
from .datasets import CaptionedImages, CompositionalityPairs, LabelledImages
from .features import default_max_length, encode_images, encode_texts, load_model_and_processor
from .linear_probe import DEFAULT_C_GRID, linear_probe_metrics
from .metrics import classification_metrics
from .retrieval import retrieval_metrics, retrieval_ranks
from .templates import available_datasets, get_templates, load_prompts
from .zero_shot import build_zero_shot_classifier, zero_shot_metrics

__all__ = sorted(
    [
        "CaptionedImages",
        "CompositionalityPairs",
        "DEFAULT_C_GRID",
        "LabelledImages",
        "LazyImages",
        "available_datasets",
        "build_zero_shot_classifier",
        "classification_metrics",
        "compositionality_metrics",
        "default_max_length",
        "encode_images",
        "encode_texts",
        "get_templates",
        "linear_probe_metrics",
        "load_captioned_images",
        "load_labelled_images",
        "load_model_and_processor",
        "load_prompts",
        "load_sugarcrepe",
        "read_class_folder",
        "retrieval_metrics",
        "retrieval_ranks",
        "zero_shot_metrics",
    ]
)
