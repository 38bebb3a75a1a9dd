# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Local Hugging Face `evaluate` modules over the torch metrics of `modeling_mcd.evaluation`.

Each module is a folder holding a script of the same name (`zero_shot_accuracy/zero_shot_accuracy.py`), the
layout `evaluate.load(<folder>)` reads from disk: a local path never reaches the Hub, so the modules work
offline. The scripts only adapt `evaluate`'s predictions/references columns to the existing functions
([`classification_metrics`], [`retrieval_metrics`]); the maths lives there, once.

Use them where `evaluate` is the interface: `add_batch` accumulation over an eval loop, `evaluate.combine`,
or its file-based gathering across processes (`num_process`, `process_id`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import evaluate

METRICS_DIR = Path(__file__).resolve().parent

#: The modules shipped in this folder, by name.
AVAILABLE_METRICS = ("retrieval_recall", "zero_shot_accuracy")


def metric_path(name: str) -> str:
    r"""
    The local folder of a shipped `evaluate` module.

    Args:
        name (`str`): one of `AVAILABLE_METRICS`.

    Returns:
        `str`: the folder's absolute path, to give to `evaluate.load`.
    """
    if name not in AVAILABLE_METRICS:
        raise ValueError(f"unknown metric {name!r}: the local evaluate modules are {list(AVAILABLE_METRICS)}")
    return str(METRICS_DIR / name)


def load_metric(name: str, **kwargs) -> evaluate.EvaluationModule:
    r"""
    Load a shipped metric through `evaluate.load` from its local folder (no download, works offline).

    Args:
        name (`str`): `"zero_shot_accuracy"` or `"retrieval_recall"`.
        **kwargs: passed to `evaluate.load`, e.g. `keep_in_memory`, `cache_dir`, `experiment_id`,
            `num_process`, `process_id`.

    Returns:
        `evaluate.EvaluationModule`: use `add_batch(predictions=..., references=...)` then `compute(...)`.
    """
    # `evaluate` is an optional dependency (the `train` extra): `modeling_mcd.evaluation` imports without it.
    import evaluate

    return evaluate.load(metric_path(name), **kwargs)


__all__ = ["AVAILABLE_METRICS", "load_metric", "metric_path"]
