# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""A run's options from a YAML recipe and the command line: `parse_run_args(argv, default_recipe)` reads an optional
YAML file (its keys are the flags) followed by flags that override it, into `ModelArguments`, `DataArguments` and
`MCDTrainingArguments`, and checks the options that span them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml
from transformers import HfArgumentParser

from .arguments import DataArguments, ModelArguments
from .training_arguments import MCDTrainingArguments


def parse_run_args(
    argv: list[str] | None = None, default_recipe: str | Path | None = None
) -> tuple[ModelArguments, DataArguments, MCDTrainingArguments]:
    r"""
    Read a run: an optional YAML recipe (its keys are the flags) followed by flags that override it.

    Args:
        argv (`list[str]`, *optional*): the command line without the program; defaults to `sys.argv[1:]`.
        default_recipe (`str` or `Path`, *optional*): the recipe that flags override when `argv` does not
            start with a `.yaml`/`.yml` file.

    Returns:
        `(ModelArguments, DataArguments, MCDTrainingArguments)`
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not (argv and argv[0].endswith((".yaml", ".yml"))) and default_recipe is not None:
        argv = [str(default_recipe)] + argv
    if argv and argv[0].endswith((".yaml", ".yml")):
        with open(argv[0]) as handle:
            recipe = yaml.safe_load(handle) or {}
        argv = yaml_to_flags(recipe) + argv[1:]
    parser = HfArgumentParser((ModelArguments, DataArguments, MCDTrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    check_run_args(model_args, data_args, training_args)
    return model_args, data_args, training_args


def check_run_args(model_args: ModelArguments, data_args: DataArguments, training_args: MCDTrainingArguments) -> None:
    """The checks that read flags of more than one dataclass, run as soon as all three are parsed (before any data is
    read or model built); each raises `ValueError` naming the flags."""
    if model_args.lock_text_tower and training_args.use_mlm:
        raise ValueError(
            "--lock_text_tower needs --use_mlm false: MLM trains the text tower, which --lock_text_tower locks"
        )


def yaml_to_flags(recipe: dict) -> list[str]:
    """`{"max_steps": 5, "orig_crop_scale": [0.5, 1]}` -> `["--max_steps", "5", "--orig_crop_scale", "0.5", "1"]`."""
    flags: list[str] = []
    for key, value in recipe.items():
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        flags += [f"--{key}", *(str(v) for v in values)]
    return flags


__all__ = ["check_run_args", "parse_run_args", "yaml_to_flags"]
