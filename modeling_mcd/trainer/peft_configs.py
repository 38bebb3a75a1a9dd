# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""The adapters a run asks for: the `--lora_*` flags (or a `--peft_config` file) as a `peft.PeftConfig`.

`MCDForPreTraining.add_adapters` (`modeling_mcd.pretraining.adapters`) puts the config's adapters on the student.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from peft import PeftConfig

    from ..modeling_mcd import MCDModel
    from .arguments import ModelArguments

#: `--lora_towers` values, and the student's modules each names: (tower, its projection).
LORA_TOWERS = {"vision": ("vision_model", "visual_projection"), "text": ("text_model", "text_projection")}
#: `--lora_target_modules` default: the attention query and value projections (LoRA's choice, Hu et al. 2021 §7.1) of
#: ViT and CLIP towers (`q_proj`, `v_proj`) and of BERT (`query`, `value`).
DEFAULT_TARGET_MODULES = ("q_proj", "v_proj", "query", "value")
#: `--lora_target_modules all-linear`: every `nn.Linear` of the chosen towers.
ALL_LINEAR = "all-linear"


def build_peft_config(model_args: ModelArguments, student: MCDModel) -> PeftConfig | None:
    r"""
    The adapters a run puts on its student, or `None` when it has neither `--lora_r` nor `--peft_config`.

    Args:
        model_args (`ModelArguments`): `--lora_r`, `--lora_alpha`, `--lora_dropout`, `--lora_target_modules`,
            `--lora_towers`, `--lora_train_projections`; or `--peft_config`, a peft config JSON file (or a folder with
            an `adapter_config.json`) whose `target_modules` name `MCDModel` modules (`vision_model.…`, `text_model.…`).
        student (`MCDModel`): the model the adapters go on; every chosen tower must have a layer to adapt.

    Returns:
        `peft.PeftConfig`, or `None`.
    """
    if model_args.peft_config:
        return load_peft_config(model_args.peft_config)
    if not model_args.lora_r:
        return None
    from peft import LoraConfig

    towers = [LORA_TOWERS[name] for name in model_args.lora_towers]
    names = _target_names(student, model_args.lora_towers, model_args.lora_target_modules)
    # One regex over MCDModel module paths, `<tower>.….<name>`, which peft full-matches: no layer of another tower and
    # no projection can match it.
    pattern = rf"({'|'.join(tower for tower, _ in towers)})\.(.*\.)?({'|'.join(map(re.escape, names))})"
    return LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=pattern,
        modules_to_save=[projection for _, projection in towers] if model_args.lora_train_projections else None,
    )


def _target_names(student: MCDModel, tower_names: list[str], requested: list[str]) -> list[str]:
    """The last names of the linear layers that get adapters; `ValueError` when a chosen tower has none of them."""
    names: set[str] = set()
    for tower_name in tower_names:
        tower = getattr(student, LORA_TOWERS[tower_name][0])
        linear = {path.rsplit(".", 1)[-1] for path, module in tower.named_modules() if isinstance(module, nn.Linear)}
        chosen = linear if requested == [ALL_LINEAR] else linear & set(requested)
        if not chosen:
            raise ValueError(
                f"--lora_target_modules {' '.join(requested)} names no linear layer of the {tower_name} tower "
                f"({type(tower).__name__}), whose linear layers are {sorted(linear)}; or leave the tower out of "
                "--lora_towers"
            )
        names |= chosen
    return sorted(names)


def load_peft_config(path: str | os.PathLike) -> PeftConfig:
    """A peft config from a JSON file, or from the `adapter_config.json` of a folder (`--peft_config`)."""
    from peft import PeftConfig

    file = os.path.join(path, "adapter_config.json") if os.path.isdir(path) else path
    values = PeftConfig.from_json_file(file)
    if "peft_type" not in values:
        raise ValueError(f'--peft_config {path}: {file} has no `peft_type` (for example "LORA")')
    return PeftConfig.from_peft_type(**values)


__all__ = ["ALL_LINEAR", "DEFAULT_TARGET_MODULES", "LORA_TOWERS", "build_peft_config", "load_peft_config"]
