# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Parameter-efficient fine-tuning of the MCD student with peft: LoRA (or LoHa, LoKr) adapters on either tower.

- `build_peft_config(model_args, student)`: the `--lora_*` flags as a `LoraConfig`, or the `--peft_config` file.
- `add_student_adapters(model, peft_config)`: peft's `get_peft_model` on `model.mcd`, in place. In the student only the
  adapters train (and, with `--lora_train_projections`, the adapted towers' projections, as peft `modules_to_save`).
  The MLM head is training-only (never exported) and keeps training; its decoder stays tied to the frozen word
  embeddings.
- `effective_weights(module)`: the weights the student computes with, each adapted one merged (W + ΔW): what the teacher
  follows.
- `merged_student(model)`: peft's `merge_and_unload` on a copy: a plain `MCDModel` (what `export_student` returns).
- `save_adapters(model, directory)`: peft's `save_pretrained`: the adapters alone (`adapter_model.safetensors`,
  `adapter_config.json`); `PeftModel.from_pretrained(<the MCDModel the run started from>, directory)` loads them back.

The student keeps its class and its parameter names (`mcd.vision_model.….q_proj.base_layer.weight`,
`….q_proj.lora_A.default.weight`), so the teacher, the Trainer and the checkpoints see one module tree. The `PeftModel`
is kept beside that tree (`model.peft_student`, not a submodule) for saving and merging.

**The teacher** (docs/method.md §5) stays a full frozen copy of what it follows (image tower and projection; with
`--teacher_text ema` the text side too) and moves towards the student's effective weights,
θ̄ ← m·θ̄ + (1 − m)·(W + ΔW) with ΔW = (α / r)·BA recomputed from the current adapters at every update. An EMA of A
and B taken separately would not be the EMA of BA. This is exact for every method whose merge adds a weight-shaped ΔW
(`ADDITIVE_PEFT_TYPES`); others are refused.
"""

from __future__ import annotations

import copy
import os
import re
import sys
import warnings
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from peft import PeftConfig, PeftModel

    from .arguments import ModelArguments
    from .modeling_mcd import MCDModel
    from .pretraining import MCDForPreTraining

#: `--lora_towers` values, and the student's modules each names: (tower, its projection).
LORA_TOWERS = {"vision": ("vision_model", "visual_projection"), "text": ("text_model", "text_projection")}
#: `--lora_target_modules` default: the attention query and value projections (LoRA's choice, Hu et al. 2021 §7.1) of
#: ViT and CLIP towers (`q_proj`, `v_proj`) and of BERT (`query`, `value`).
DEFAULT_TARGET_MODULES = ("q_proj", "v_proj", "query", "value")
#: `--lora_target_modules all-linear`: every `nn.Linear` of the chosen towers.
ALL_LINEAR = "all-linear"
#: peft methods whose merge adds a weight-shaped ΔW to the base weight, so the teacher can follow W + ΔW exactly.
ADDITIVE_PEFT_TYPES = ("LORA", "LOHA", "LOKR")
ADAPTER_NAME = "default"


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


def check_additive(peft_config: PeftConfig) -> None:
    """`ValueError` unless merging `peft_config`'s adapters adds a weight-shaped ΔW (what the teacher follows)."""
    kind = str(getattr(peft_config.peft_type, "value", peft_config.peft_type))
    extras = [name for name in ("use_dora", "lora_bias", "trainable_token_indices") if getattr(peft_config, name, None)]
    if kind not in ADDITIVE_PEFT_TYPES or extras:
        raise ValueError(
            f"--peft_config: {kind}{' with ' + ', '.join(extras) if extras else ''} does not merge as W + ΔW, "
            f"which the EMA teacher follows (docs/method.md §5); use one of {ADDITIVE_PEFT_TYPES} without "
            "use_dora, lora_bias or trainable_token_indices"
        )


def add_student_adapters(model: MCDForPreTraining, peft_config: PeftConfig) -> PeftModel:
    r"""
    Put `peft_config`'s adapters on the student `model.mcd` (in place), leave only them trainable in the student, and
    start the teacher at the student's effective weights.

    Args:
        model (`MCDForPreTraining`): built and holding its starting weights (adapters go on what is loaded).
        peft_config (`peft.PeftConfig`): see [`build_peft_config`]; copied, not changed.

    Returns:
        `peft.PeftModel` around `model.mcd`, also kept as `model.peft_student`.
    """
    from peft import get_peft_model
    from transformers.integrations import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        raise ValueError(
            "LoRA does not run under DeepSpeed ZeRO-3: the teacher's update merges whole weights. A LoRA run's "
            "trainable state is small: use ZeRO-2 or plain data parallelism"
        )
    check_additive(peft_config)
    peft_config = copy.deepcopy(peft_config)
    peft_config.inference_mode = False  # the adapters train
    peft_config.task_type = None  # MCD calls the student's own methods, never a task model's forward
    with warnings.catch_warnings():  # peft reads transformers' deprecated `is_gradient_checkpointing`
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        student = get_peft_model(model.mcd, peft_config, adapter_name=ADAPTER_NAME)
    model.__dict__["peft_student"] = student  # not a submodule: parameter names stay `mcd.…`
    freeze_base_weights(model)
    for tower in (model.mcd.vision_model, model.mcd.text_model):
        if tower.is_activation_checkpointing:
            # Frozen embeddings: a checkpointed block's input must require grad for gradients to reach its adapters.
            tower.enable_input_require_grads()
    model.reset_teacher()
    return student


def peft_student(model: MCDForPreTraining) -> PeftModel | None:
    """The `PeftModel` around `model.mcd`, or `None` when the student has no adapters."""
    return model.__dict__.get("peft_student")


def student_peft_config(model: MCDForPreTraining) -> PeftConfig | None:
    """A copy of the config of the student's adapters (to build the same model again, e.g. to resume), or `None`."""
    student = peft_student(model)
    if student is None:
        return None
    config = copy.deepcopy(student.peft_config[ADAPTER_NAME])
    config.base_model_name_or_path = None  # the copy goes on another model; the record stays with `model`'s own
    return config


def freeze_base_weights(model: MCDForPreTraining) -> None:
    """In the student only the adapters (and peft's `modules_to_save` copies) train. Called after the adapters are
    added, and again after `from_pretrained`, whose loading makes every parameter trainable."""
    from peft.functional import set_requires_grad

    model.mcd.requires_grad_(False)
    set_requires_grad(model.mcd, ADAPTER_NAME, requires_grad=True)


@torch.no_grad()
def effective_weights(module: nn.Module) -> dict[str, torch.Tensor]:
    r"""
    The weights `module` computes with, named as the module without adapters names them: an adapted layer's weight
    merged, W + ΔW (what `merge_and_unload` writes), a `modules_to_save` copy in place of the module it trains, every
    other parameter as it is. Without adapters: `dict(module.named_parameters())`, the parameters themselves (so the
    ZeRO-3 EMA reaches their shards).

    Args:
        module (`nn.Module`): a student tower or projection.

    Returns:
        `dict[str, torch.Tensor]`: name -> tensor of the un-adapted parameter's shape. A merged weight is a new tensor
        in the wider dtype of W and ΔW (an fp32 adapter on a bf16 base gives the fp32 teacher the exact sum).
    """
    adapted = _adapted_modules(module)
    if not adapted:
        return dict(module.named_parameters())
    weights = {name: param for name, param in module.named_parameters() if not _inside(name, adapted)}
    for path, layer in adapted.items():
        prefix = f"{path}." if path else ""
        inner, delta = _computing_module(layer)
        weights.update({prefix + name: param for name, param in inner.named_parameters()})
        if delta is not None:
            weights[prefix + "weight"] = inner.weight + delta  # (out, in): W + (α / r)·BA for LoRA
    return weights


def _adapted_modules(module: nn.Module) -> dict[str, nn.Module]:
    """The outermost peft layers inside `module` by path: tuner layers (LoRA, …) and `modules_to_save` wrappers."""
    if "peft" not in sys.modules:  # no adapter exists before peft is imported (the inference library never imports it)
        return {}
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    found: dict[str, nn.Module] = {}
    for path, sub in module.named_modules():  # parents come before their children
        if isinstance(sub, (BaseTunerLayer, AuxiliaryTrainingWrapper)) and not _inside(path, found):
            found[path] = sub
    return found


def _inside(name: str, paths: dict[str, nn.Module]) -> bool:
    return any(path == "" or name.startswith(path + ".") for path in paths)


def _computing_module(layer: nn.Module) -> tuple[nn.Module, torch.Tensor | None]:
    """(the module whose parameters `layer` computes with, the ΔW its active adapters add to that module's weight)."""
    from peft.utils.other import ModulesToSaveWrapper

    if isinstance(layer, ModulesToSaveWrapper):
        active = layer.active_adapters
        if layer.disable_adapters or not active or active[0] not in layer.modules_to_save:
            return layer.original_module, None
        return layer.modules_to_save[active[0]], None
    if not hasattr(layer, "get_delta_weight"):
        raise ValueError(f"{type(layer).__name__}: no W + ΔW form for the teacher to follow (docs/method.md §5)")
    base = layer.get_base_layer()
    adapters = [
        name
        for name in ([] if layer.disable_adapters else layer.active_adapters)
        if name not in layer.merged_adapters and any(name in getattr(layer, n, {}) for n in layer.adapter_layer_names)
    ]
    if not adapters:
        return base, None
    return base, sum(layer.get_delta_weight(name) for name in adapters)


def merged_student(model: MCDForPreTraining) -> MCDModel:
    """peft's `merge_and_unload` on a copy of the adapted student: a plain `MCDModel` computing with the effective
    weights. The training model keeps its adapters (evaluation during training calls this too); the copy costs one
    student's memory while it lives."""
    return copy.deepcopy(peft_student(model)).merge_and_unload()


def save_adapters(model: MCDForPreTraining, directory: str | os.PathLike) -> str:
    """peft's `save_pretrained` of the student's adapters (and `modules_to_save` copies) alone; returns `directory`."""
    peft_student(model).save_pretrained(directory)
    return str(directory)


__all__ = [
    "ADDITIVE_PEFT_TYPES",
    "ALL_LINEAR",
    "DEFAULT_TARGET_MODULES",
    "LORA_TOWERS",
    "add_student_adapters",
    "build_peft_config",
    "check_additive",
    "effective_weights",
    "freeze_base_weights",
    "load_peft_config",
    "merged_student",
    "peft_student",
    "save_adapters",
    "student_peft_config",
]
