# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""The metrics table that `mcd eval` and the training script print, and the chance level of each `mcd eval` metric."""

from __future__ import annotations

from collections.abc import Mapping

from .metrics import classification_chance
from .retrieval import retrieval_chance


def format_metrics(title: str, metrics: Mapping[str, float | int], chance: Mapping[str, float] | None = None) -> str:
    r"""
    A text table of metrics, with a chance column when `chance` names any of them.

    Args:
        title (`str`): the first line.
        metrics (`Mapping[str, float | int]`): fractions are shown as they are (in [0, 1]), counts and ranks as
            numbers.
        chance (`Mapping[str, float]`, *optional*): what a random model scores, by metric name.

    Returns:
        `str`: the table, one metric per line.
    """
    if not metrics:
        return f"{title}\n(no metrics)"
    chance = chance or {}
    width = max(len(name) for name in metrics)
    show_chance = any(name in chance for name in metrics)
    header = f"{'metric':<{width}}  {'value':>10}" + (f"  {'chance':>10}" if show_chance else "")
    lines = [title, header, "-" * len(header)]
    for name, value in metrics.items():
        shown = f"{value:10.4f}" if isinstance(value, float) else f"{value:>10}"
        if show_chance and name in chance:
            shown += f"  {chance[name]:10.4f}"
        lines.append(f"{name:<{width}}  {shown}")
    return "\n".join(lines)


def _best_of_median_rank(total: int, hits: int) -> float:
    """The median rank of the best of `hits` positions drawn at random among `total`: the smallest r with
    P(rank <= r) = 1 - prod_{j<r} (total - hits - j) / (total - j) >= 1/2."""
    missed = 1.0
    for rank in range(1, total + 1):
        missed *= max(total - hits - rank + 1, 0) / (total - rank + 1)
        if missed <= 0.5:
            return float(rank)
    return float(total)


def eval_chance(task: str, metrics: Mapping[str, float | int], num_classes: int | None = None) -> dict[str, float]:
    r"""
    What a model that ranks at random scores on each metric `mcd eval <task>` reports (counts, such as
    `num_samples`, and the linear probe's `C` have none).

    Args:
        task (`str`): `zero-shot`, `linear-probe`, `retrieval` or `compositionality`.
        metrics (`Mapping[str, float]`): the task's metrics (retrieval reads its `num_images` and `num_texts`).
        num_classes (`int`, *optional*): the classes a classification task chooses among.

    Returns:
        `dict[str, float]`: by metric name.
    """
    if task in ("zero-shot", "linear-probe"):
        if not num_classes:
            raise ValueError(f"the chance levels of {task} need the number of classes")
        chance = classification_chance(num_classes)
        chance["val_top1"] = 1 / num_classes  # the probe's held-out accuracy, same classes
    elif task == "retrieval":
        images, texts = int(metrics["num_images"]), int(metrics["num_texts"])
        chance = retrieval_chance(images, texts)
        chance["text_to_image_median_rank"] = (images + 1) / 2
        chance["image_to_text_median_rank"] = _best_of_median_rank(texts, max(texts // images, 1))
        recalls = [value for name, value in chance.items() if "_R@" in name and name in metrics]
        chance["mean_recall"] = sum(recalls) / len(recalls)
    elif task == "compositionality":  # the true caption against one negative: a coin toss per sample
        chance = {name: 0.5 for name in metrics if not name.startswith("num_")}
    else:
        raise ValueError(f"unknown task {task!r}")
    return {name: value for name, value in chance.items() if name in metrics}


__all__ = ["eval_chance", "format_metrics"]
