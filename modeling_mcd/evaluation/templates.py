# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Class names and prompt templates for zero-shot classification, read from `modeling_mcd/templates/*.json`.

Each JSON file is named after its dataset and holds `{"source", "classes", "templates"}`, copied from
openai/CLIP (MIT). Templates use `{}` where the class name goes; templates written for CLIP_benchmark, which use
`{c}`, are accepted too ([`fill_template`]). Datasets without a file use CLIP's 80 ImageNet templates, the usual
generic default (open_clip, CLIP_benchmark).
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


#: Where a template puts the class name: openai/CLIP's `{}` or CLIP_benchmark's `{c}`.
PLACEHOLDERS = ("{}", "{c}")


def _placeholder(template: str) -> str | None:
    """The one placeholder of `template`, or `None` when it has none, several, or both kinds."""
    counts = {placeholder: template.count(placeholder) for placeholder in PLACEHOLDERS}
    found = [placeholder for placeholder, count in counts.items() if count]
    return found[0] if len(found) == 1 and counts[found[0]] == 1 else None


def check_templates(templates: tuple[str, ...] | list[str], source: str = "templates") -> None:
    """Raise `ValueError` unless every template is a string holding exactly one placeholder for the class name,
    `{}` or `{c}`."""
    if len(templates) == 0:
        raise ValueError(f"{source}: no templates")
    for index, template in enumerate(templates):
        if not isinstance(template, str) or _placeholder(template) is None:
            raise ValueError(
                f"{source}: template {index} ({template!r}) must contain exactly one '{{}}' or '{{c}}' for the class "
                "name"
            )


def fill_template(template: str, classname: str) -> str:
    """`template` with its placeholder (`{}` or `{c}`) replaced by `classname`.

    The placeholder is replaced as text rather than with `str.format`, so that any other brace in a template (or in
    a class name) is kept as it is instead of raising; for CLIP's and CLIP_benchmark's templates the result is what
    `template.format(classname)` and `template.format(c=classname)` give.
    """
    placeholder = _placeholder(template)
    if placeholder is None:
        raise ValueError(f"template {template!r} must contain exactly one '{{}}' or '{{c}}' for the class name")
    return template.replace(placeholder, classname)


__all__ = [
    "DEFAULT_TEMPLATES_DATASET",
    "PLACEHOLDERS",
    "ZeroShotPrompts",
    "available_datasets",
    "check_templates",
    "fill_template",
    "get_templates",
    "load_prompts",
]
