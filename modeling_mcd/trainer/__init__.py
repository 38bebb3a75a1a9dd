# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Training: [`MCDTrainer`] (transformers' `Trainer` computing the MCD objective), its arguments and what a run needs
around it. Needs the `train` extra (accelerate, datasets, kornia); the names below load on first use.

- `mcd_trainer`: `MCDTrainer`.
- `training_arguments`, `arguments`, `flag_checks`: `MCDTrainingArguments`, the model and data flags, their checks.
- `builder`, `peft_configs`, `wordpiece`: the tokenizer, the model and its adapters, built from the flags.
- `accumulation`: the feature cache that makes gradient accumulation exact for a contrastive objective.
- `nonfinite`, `single_image_steps`: steps that cannot count, skipped or reported.
- `checkpoints`, `fingerprint`, `resume_checks`, `run_checks`, `run_lock`, `preemption`, `errors`: nothing is lost
  on a crash, a resume is checked against what it resumes, and a run ends with one clear line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_LAZY = {
    "MCDTrainer": "mcd_trainer",
    "MCDTrainingArguments": "training_arguments",
    "ModelArguments": "arguments",
    "DataArguments": "arguments",
}

if TYPE_CHECKING:
    from .arguments import DataArguments, ModelArguments
    from .mcd_trainer import MCDTrainer
    from .training_arguments import MCDTrainingArguments


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
