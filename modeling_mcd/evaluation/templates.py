# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Class names and prompt templates for zero-shot classification, read from `modeling_mcd/templates/*.json`.

Each JSON file is named after its dataset and holds `{"source", "classes", "templates"}`, copied from
openai/CLIP (MIT). Templates use `{}` where the class name goes. Datasets without a file use CLIP's 80
ImageNet templates, the usual generic default (open_clip, CLIP_benchmark).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"

#: The dataset whose templates serve any dataset without its own file.
DEFAULT_TEMPLATES_DATASET = "imagenet"


@dataclass(frozen=True)
class ZeroShotPrompts:
    """The class names of a dataset (in label order) and its prompt templates."""

    classnames: tuple[str, ...]
    templates: tuple[str, ...]


def available_datasets() -> list[str]:
    """Names of the datasets that ship class names and templates, e.g. `["cifar10", "imagenet"]`."""
    return sorted(path.stem for path in TEMPLATES_DIR.glob("*.json"))


@cache
def load_prompts(dataset: str) -> ZeroShotPrompts:
    """Read `templates/<dataset>.json`.

    Args:
        dataset (`str`): one of [`available_datasets`], case-insensitive.

    Returns:
        [`ZeroShotPrompts`] with the dataset's class names and templates.
    """
    path = TEMPLATES_DIR / f"{dataset.lower()}.json"
    if not path.is_file():
        raise ValueError(f"no zero-shot prompts for dataset {dataset!r}; available: {available_datasets()}")
    entry = json.loads(path.read_text(encoding="utf-8"))
    prompts = ZeroShotPrompts(classnames=tuple(entry["classes"]), templates=tuple(entry["templates"]))
    check_templates(prompts.templates, source=str(path))
    return prompts


def get_templates(dataset: str | None = None) -> tuple[str, ...]:
    """The templates of `dataset`, or CLIP's 80 ImageNet templates when it is `None` or has no file."""
    if dataset is not None and dataset.lower() in available_datasets():
        return load_prompts(dataset).templates
    return load_prompts(DEFAULT_TEMPLATES_DATASET).templates


def check_templates(templates: tuple[str, ...] | list[str], source: str = "templates") -> None:
    """Raise `ValueError` unless every template holds exactly one `{}` for the class name."""
    if len(templates) == 0:
        raise ValueError(f"{source}: no templates")
    for index, template in enumerate(templates):
        if template.count("{}") != 1:
            raise ValueError(f"{source}: template {index} ({template!r}) must contain exactly one '{{}}'")


__all__ = [
    "DEFAULT_TEMPLATES_DATASET",
    "ZeroShotPrompts",
    "available_datasets",
    "check_templates",
    "get_templates",
    "load_prompts",
]
