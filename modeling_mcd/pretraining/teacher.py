# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""The momentum (EMA) teacher of docs/method.md §5: θ̄ ← m·θ̄ + (1 − m)·θ after every optimizer step.

The teacher lives inside the training model as a frozen copy of the student tower (ALBEF's pattern),
so every data-parallel backend treats it like the student:

- single process / DDP / ZeRO-1/2: every rank holds the full, identical parameters -> update them.
- ZeRO-3: each parameter's shard lives in `param.ds_tensor` (a flat 1-D slice, same layout for the
  student and its teacher copy). We update shard by shard, with no communication. Parameters at or
  below `stage3_param_persistence_threshold` are also kept whole on every rank
  (`param.ds_persist`, status AVAILABLE) and the forward reads that full `param.data` without
  re-gathering it: it must be updated too, or the teacher silently stops moving. The shard must stay
  in sync as well, because checkpointing re-partitions and re-gathers from it.

Only parameters are averaged, not buffers: the towers' buffers (e.g. ViT/BERT `position_ids`) are
constants, identical in the student and the teacher.

Precision: the update runs in the parameters' own dtype. Keep the teacher in fp32: in bf16, increments
of (1 − m)·(θ − θ̄) are mostly below the rounding step and the teacher barely moves.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn


def momentum_at(step: int, total_steps: int, base_momentum: float = 0.996) -> float:
    """Cosine momentum schedule m(step) = 1 − (1 − m₀)·(cos(π·step/T) + 1)/2 (docs/method.md §5).

    Args:
        step (`int`): the global optimizer step; clamped to `[0, total_steps]`.
        total_steps (`int`): T, the number of training steps (m reaches 1 there).
        base_momentum (`float`): m₀ = m(0), in [0, 1].

    Returns:
        `float`: the momentum for this step, in `[base_momentum, 1]`.
    """
    if not isinstance(total_steps, int) or total_steps <= 0:
        raise ValueError(f"`total_steps` must be a positive int, got {total_steps!r}")
    if not 0.0 <= base_momentum <= 1.0:
        raise ValueError(f"`base_momentum` must be in [0, 1], got {base_momentum}")
    step = min(max(step, 0), total_steps)
    return 1.0 - (1.0 - base_momentum) * (math.cos(math.pi * step / total_steps) + 1.0) / 2.0


def paired_parameters(
    teacher: nn.Module, student: nn.Module | Mapping[str, torch.Tensor]
) -> tuple[list[nn.Parameter], list[torch.Tensor]]:
    """The teacher's and the student's parameters, paired by name, in the same order.

    Args:
        teacher (`nn.Module`): the EMA copy.
        student (`nn.Module` or `Mapping[str, torch.Tensor]`): the module it follows, or its weights by name (an
            adapted student's effective weights, `modeling_mcd.pretraining.adapters.effective_weights`).

    Returns:
        `(teacher_params, student_params)`: two lists where entry k of each has the same name.
    """
    teacher_named = dict(teacher.named_parameters())
    student_named = dict(student) if isinstance(student, Mapping) else dict(student.named_parameters())
    for name in student_named:
        if name not in teacher_named:
            raise ValueError(f"student parameter `{name}` has no teacher counterpart")
    for name in teacher_named:
        if name not in student_named:
            raise ValueError(f"teacher parameter `{name}` has no student counterpart")
    names = list(student_named)
    return [teacher_named[n] for n in names], [student_named[n] for n in names]


def _shape(param: torch.Tensor) -> tuple[int, ...]:
    # A ZeRO-3 parameter's own `.shape` is empty once partitioned; `ds_shape` keeps the real one.
    return tuple(getattr(param, "ds_shape", param.shape))


def _is_whole(param: torch.Tensor) -> bool:
    """Whether a ZeRO-3 parameter currently holds its full data (persisted or gathered)."""
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    return param.ds_status == ZeroParamStatus.AVAILABLE


def _tensor_pairs(
    teacher_params: Sequence[nn.Parameter], student_params: Sequence[nn.Parameter]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The storage to update for each (teacher, student) pair: full data, or ZeRO-3 shard (+ full data if whole)."""
    if len(teacher_params) != len(student_params):
        raise ValueError(
            f"`teacher_params` and `student_params` must have the same length, got {len(teacher_params)} "
            f"and {len(student_params)}"
        )
    teacher_tensors, student_tensors = [], []
    for index, (t, s) in enumerate(zip(teacher_params, student_params)):
        if _shape(t) != _shape(s):
            raise ValueError(f"parameter {index}: teacher shape {_shape(t)} != student shape {_shape(s)}")
        if hasattr(t, "ds_id") != hasattr(s, "ds_id"):
            raise ValueError(f"parameter {index}: only one of teacher and student is a ZeRO-3 parameter")
        if not hasattr(t, "ds_id"):
            teacher_tensors.append(t.data)
            student_tensors.append(s.data)
            continue
        teacher_tensors.append(t.ds_tensor.data)  # (numel / world,) this rank's shard
        student_tensors.append(s.ds_tensor.data)
        # e.g. ds_persist: the forward reads this full copy, not the shard (skip if it aliases the shard)
        if _is_whole(t) and t.data.data_ptr() != t.ds_tensor.data_ptr():
            if not _is_whole(s):
                raise RuntimeError(
                    f"parameter {index}: the ZeRO-3 teacher holds its full data but the student does not; "
                    "use the same stage3_param_persistence_threshold for both (same shapes persist alike)"
                )
            teacher_tensors.append(t.data)
            student_tensors.append(s.data)
    return teacher_tensors, student_tensors


@torch.no_grad()
def copy_params_(teacher_params: Sequence[nn.Parameter], student_params: Sequence[nn.Parameter]) -> None:
    """Make the teacher an exact copy of the student (docs/method.md §5: the teacher starts as the student).

    Args:
        teacher_params (`Sequence[nn.Parameter]`): updated in place.
        student_params (`Sequence[nn.Parameter]`): same order and shapes (see [`paired_parameters`]).
    """
    teacher_tensors, student_tensors = _tensor_pairs(teacher_params, student_params)
    if teacher_tensors:
        torch._foreach_copy_(teacher_tensors, student_tensors)  # copy_ casts to the teacher's dtype


@torch.no_grad()
def ema_update_(
    teacher_params: Sequence[nn.Parameter], student_params: Sequence[nn.Parameter], momentum: float
) -> None:
    """θ̄ ← m·θ̄ + (1 − m)·θ, in place, for every pair (docs/method.md §5, paper Eq. 12).

    Runs after the optimizer step, on every rank, with no communication (see the module docstring for
    DDP and ZeRO-3). Only parameters are averaged; buffers are left alone.

    Args:
        teacher_params (`Sequence[nn.Parameter]`): θ̄, updated in place.
        student_params (`Sequence[nn.Parameter]`): θ, same order and shapes (see [`paired_parameters`]).
        momentum (`float`): m in [0, 1]; 1 leaves the teacher unchanged, 0 copies the student.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"`momentum` must be in [0, 1], got {momentum}")
    teacher_tensors, student_tensors = _tensor_pairs(teacher_params, student_params)
    if teacher_tensors:
        # The teacher stays fp32 when the student trains in bf16/fp16 (MCDForPreTraining.keep_teacher_fp32): the
        # student is read in the teacher's precision, so the increment is computed and kept in fp32.
        student_tensors = [s if s.dtype == t.dtype else s.to(t.dtype) for t, s in zip(teacher_tensors, student_tensors)]
        # lerp: θ̄ + (1 − m)(θ − θ̄) = m·θ̄ + (1 − m)·θ, one fused kernel per dtype/device group.
        torch._foreach_lerp_(teacher_tensors, student_tensors, 1.0 - momentum)


@torch.no_grad()
def upcast_(teacher_params: Sequence[nn.Parameter]) -> None:
    """Put the teacher's bf16/fp16 weights back in float32 (float32 and float64 stay as they are).

    In bf16 the EMA increment (1 − m)(θ − θ̄) mostly rounds away when m is close to 1 (a toy run over 1,000 steps at
    m₀ = 0.996: a bf16 teacher moved 0.31 where an fp32 one moved 0.79), so the teacher keeps fp32 weights and its EMA
    runs in fp32; its forward still computes in the towers' precision ([`autocast_to_inputs`]). Under ZeRO-3 each
    process's shard (`ds_tensor`) is cast, and the whole tensor of the parameters kept on every rank.
    """
    low = (torch.bfloat16, torch.float16)
    for param in teacher_params:
        if hasattr(param, "ds_tensor") and param.ds_tensor.dtype in low:
            param.ds_tensor.data = param.ds_tensor.data.float()
        if param.dtype in low:
            param.data = param.data.float()


def autocast_to_inputs(weight_dtype: torch.dtype, inputs: torch.Tensor):
    """Autocast to the inputs' precision when fp32 teacher weights meet bf16/fp16 inputs (DeepSpeed); nothing when
    they already agree (fp32, or under the Trainer's own autocast)."""
    if not inputs.is_floating_point() or inputs.dtype == weight_dtype:
        return contextlib.nullcontext()
    return torch.autocast(device_type=inputs.device.type, dtype=inputs.dtype)


__all__ = [
    "autocast_to_inputs",
    "copy_params_",
    "ema_update_",
    "momentum_at",
    "paired_parameters",
    "upcast_",
]
