# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""peft adapters (LoRA, LoHa, LoKr) on the MCD student, and the weights its EMA teacher follows.

- `wrap_student(student, peft_config)`: peft's `get_peft_model` on the student `MCDModel`, in place;
  `MCDForPreTraining.add_adapters` calls it, leaves only the adapters trainable in the student (and, with
  `modules_to_save`, the adapted towers' projections) and restarts the teacher. The MLM head is training-only (never
  exported) and keeps training; its decoder stays tied to the frozen word embeddings.
- `effective_weights(module)`: the weights the student computes with, each adapted one merged (W + ΔW): what the teacher
  follows.
- `merged_student(model)`: peft's `merge_and_unload` on a copy: a plain `MCDModel` (what `export_student` returns).
- `save_adapters(model, directory)`: peft's `save_pretrained`: the adapters alone (`adapter_model.safetensors`,
  `adapter_config.json`); `PeftModel.from_pretrained(<the MCDModel the run started from>, directory)` loads them back.

Which adapters a run asks for (`--lora_*`, `--peft_config`) is the trainer layer's business:
`modeling_mcd.trainer.peft_configs` turns the flags into a `peft.PeftConfig`.

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
import sys
import warnings
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from peft import PeftConfig, PeftModel

    from ..modeling_mcd import MCDModel
    from .model import MCDForPreTraining

#: peft methods whose merge adds a weight-shaped ΔW to the base weight, so the teacher can follow W + ΔW exactly.
ADDITIVE_PEFT_TYPES = ("LORA", "LOHA", "LOKR")
ADAPTER_NAME = "default"


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


def wrap_student(student: MCDModel, peft_config: PeftConfig) -> PeftModel:
    r"""
    peft's `get_peft_model` on `student`, in place (its parameter names become `….base_layer.weight`,
    `….lora_A.default.weight`). Refuses ZeRO-3 and adapters that do not merge as W + ΔW.

    Args:
        student (`MCDModel`): the student, holding its starting weights (adapters go on what is loaded).
        peft_config (`peft.PeftConfig`): copied, not changed; made trainable and task-less.

    Returns:
        `peft.PeftModel` around `student`.
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
        return get_peft_model(student, peft_config, adapter_name=ADAPTER_NAME)


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
    "check_additive",
    "effective_weights",
    "freeze_base_weights",
    "merged_student",
    "peft_student",
    "save_adapters",
    "student_peft_config",
    "wrap_student",
]
