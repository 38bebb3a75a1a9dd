# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Checks of the checkpoint a run resumes from, before it trains, and what resuming has to adjust.

transformers' Trainer resumes from whatever folder it is given: one without `optimizer.pt` or `scheduler.pt` gets a
fresh Adam and a learning-rate schedule restarted from its warm-up, one without its RNG state another data order,
and a folder of another run, or one cut short, fails deep inside loading with a traceback about tensor shapes.
[`check_checkpoint`] names the folder and what is wrong with it instead, [`check_same_run`] refuses to continue another
run's checkpoint on this run's data, [`check_model_fits`] compares the shapes of the model with the checkpoint's
`config.json`, and [`check_not_finished`] refuses to train a finished run for 0 steps. [`ResumeAdjustments`] restarts
the teacher from the student when the checkpoint's objective never trained it, and continues the learning-rate
schedule from the checkpoint's step when `--resume_weights_only` resumes without the scheduler's state.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any

from transformers import TrainerCallback
from transformers.utils import logging

from .errors import UsageError
from .fingerprint import FINGERPRINT_NAME, describe_data, model_differences, model_summary, read_json

logger = logging.get_logger(__name__)

_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")


def _resume_state_missing(checkpoint: str, args) -> list[str]:
    """The files of the optimizer, scheduler and RNG states that `checkpoint` lacks (for this backend)."""
    missing = []
    names = set(os.listdir(checkpoint))
    if getattr(args, "deepspeed", None) or os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        if not any(name.startswith("global_step") for name in names):  # DeepSpeed's own optimizer (and scheduler)
            missing.append("global_step*/ (DeepSpeed's optimizer state)")
    elif not getattr(args, "fsdp", None):  # FSDP names its optimizer files by rank; they are not checked here
        missing += [name for name in ("optimizer.pt", "scheduler.pt") if name not in names]
    if not any(name.startswith("rng_state") and name.endswith(".pth") for name in names):
        missing.append("rng_state.pth")
    return missing


def _check_weights(checkpoint: str) -> None:
    from safetensors import safe_open

    files = sorted(glob.glob(os.path.join(checkpoint, "*.safetensors")))
    if not files:
        raise UsageError(
            f"cannot resume from {checkpoint}: it holds no model.safetensors (not a checkpoint of a training run); "
            "resume from another checkpoint, or start afresh with a new --output_dir"
        )
    for path in files:
        try:
            with safe_open(path, framework="pt") as weights:  # reads the header, checks the file covers every tensor
                weights.keys()
        except Exception as error:
            raise UsageError(
                f"cannot resume from {checkpoint}: {path} is truncated or corrupt ({error}); resume from an earlier "
                "checkpoint (--resume_from_checkpoint), or delete this one"
            ) from error


def check_checkpoint(checkpoint: str, args, explicit: bool) -> dict[str, Any]:
    r"""
    Check that `checkpoint` is a complete checkpoint this run can resume from, and read its trainer state.

    Args:
        checkpoint (`str`): the folder.
        args (`MCDTrainingArguments`): `--resume_weights_only`, `--do_train`, the backend.
        explicit (`bool`): whether `--resume_from_checkpoint` named it (otherwise it is `output_dir`'s newest).

    Returns:
        `dict`: its `trainer_state.json`.

    Raises:
        [`UsageError`] naming the folder and what is wrong: missing, no weights or truncated weights, no or a corrupt
        trainer state, no optimizer, scheduler or RNG state (unless `--resume_weights_only`, or `--do_train false`,
        which reads the weights only).
    """
    if not os.path.isdir(checkpoint):
        flag = "--resume_from_checkpoint" if explicit else "the newest checkpoint"
        raise UsageError(f"{flag} {checkpoint}: no such folder")
    _check_weights(checkpoint)
    if not args.do_train:
        return {}
    try:
        with open(os.path.join(checkpoint, "trainer_state.json"), encoding="utf-8") as handle:
            state = json.load(handle)
    except FileNotFoundError:
        raise UsageError(
            f"cannot resume from {checkpoint}: it has no trainer_state.json (an exported model, not a checkpoint?); "
            "--init_model_name_or_path starts a run from an exported model"
        ) from None
    except ValueError as error:
        raise UsageError(
            f"cannot resume from {checkpoint}: its trainer_state.json is truncated or corrupt ({error})"
        ) from error
    missing = _resume_state_missing(checkpoint, args)
    if missing and not args.resume_weights_only:
        raise UsageError(
            f"{checkpoint} lacks {', '.join(missing)}: resuming it would start a fresh optimizer, restart the "
            "learning-rate schedule or change the data order. Resume from a complete checkpoint, or pass "
            "--resume_weights_only true to resume its weights and step with a fresh optimizer"
        )
    if missing:
        logger.warning(
            "--resume_weights_only: %s lacks %s; resuming its weights and step %d with a fresh optimizer, the "
            "learning-rate schedule continued from that step (not bit-exact)",
            checkpoint,
            ", ".join(missing),
            state.get("global_step", 0),
        )
    state["missing_resume_state"] = missing
    return state


def check_not_finished(checkpoint: str, state: dict[str, Any], args) -> None:
    """Raise [`UsageError`] when the checkpoint already reached the run's end: training it again takes 0 steps."""
    step = int(state.get("global_step", 0))
    if args.max_steps > 0:
        done, limit = step >= args.max_steps, f"--max_steps {args.max_steps}"
    else:
        done = float(state.get("epoch") or 0) >= args.num_train_epochs
        limit = f"--num_train_epochs {args.num_train_epochs}"
    if done:
        raise UsageError(
            f"{checkpoint} already reached {limit} (step {step}): there is nothing left to train. --do_train false "
            f"evaluates and exports it, a larger {limit.split()[0]} trains it on, a new --output_dir (or "
            "--overwrite_output_dir true) starts afresh"
        )


def check_same_run(checkpoint: str, data: dict[str, Any], output_dir: str, explicit: bool) -> dict | None:
    r"""
    Compare the data `checkpoint` was trained on with this run's.

    Args:
        checkpoint (`str`): the checkpoint.
        data (`dict`): this run's data fingerprint (`modeling_mcd.trainer.fingerprint.data_fingerprint`).
        output_dir (`str`): the run folder (for the message).
        explicit (`bool`): `--resume_from_checkpoint` named it: other data is then a choice, logged, not refused.

    Returns:
        The checkpoint's fingerprint, or `None` when it has none (written before fingerprints).
    """
    saved = read_json(checkpoint, FINGERPRINT_NAME)
    if saved is None:
        logger.warning("%s has no %s: its data cannot be compared with this run's", checkpoint, FINGERPRINT_NAME)
        return None
    if saved.get("data") != data:
        theirs, ours = describe_data(saved.get("data")), describe_data(data)
        if explicit:
            logger.warning("resuming %s, trained on %s, on other data: %s", checkpoint, theirs, ours)
        else:
            raise UsageError(
                f"{checkpoint} was trained on other data ({theirs}; this run: {ours}): {output_dir} holds another "
                "run. Start afresh with a new --output_dir, or with --overwrite_output_dir true (which deletes its "
                f"checkpoints and vocabulary); or continue that run on this data with --resume_from_checkpoint "
                f"{checkpoint}"
            )
    return saved


def check_model_fits(checkpoint: str, config) -> None:
    """Raise [`UsageError`] naming `checkpoint` and every differing size when its weights cannot fit `config`."""
    saved = read_json(checkpoint, "config.json")
    if saved is None:
        raise UsageError(f"cannot resume from {checkpoint}: its config.json is missing, truncated or corrupt")
    differences = model_differences(model_summary(saved), model_summary(config.to_dict()))
    if differences:
        raise UsageError(
            f"cannot resume from {checkpoint}: its model is not this run's ({'; '.join(differences)}); use the "
            "checkpoint's sizes, or a new --output_dir to start afresh"
        )


def run_fingerprint(data: dict[str, Any], config, args) -> dict[str, Any]:
    """What a checkpoint of this run records: its data, its model's shapes, its objective."""
    return {
        "format": 1,
        "data": data,
        "model": model_summary(config.to_dict()),
        "objective": args.objective,
        "uses_teacher": args.build_loss().uses_teacher,
    }


class ResumeAdjustments(TrainerCallback):
    r"""
    What resuming changes once the Trainer has loaded the checkpoint (at `on_train_begin`).

    Args:
        teacher_note (`str`, *optional*): when set, the checkpoint's objective never trained the teacher (`clip`,
            `mpnce`) and this one distils from it: the teacher is made a copy of the student, as at the start of
            training, and this note logged.
        continue_schedule (`bool`, *optional*): the scheduler's state was not loaded (`--resume_weights_only`): step
            the new schedule to the checkpoint's step, so the learning rate is the one the step calls for.
    """

    def __init__(self, teacher_note: str | None = None, continue_schedule: bool = False):
        self.teacher_note = teacher_note
        self.continue_schedule = continue_schedule

    def on_train_begin(self, args, state, control, model=None, lr_scheduler=None, **kwargs):
        if self.teacher_note is not None:
            while not hasattr(model, "reset_teacher") and hasattr(model, "module"):
                model = model.module
            model.reset_teacher()
            logger.warning(self.teacher_note)
        if self.continue_schedule and lr_scheduler is not None and state.global_step:
            _advance(lr_scheduler, state.global_step)


def _advance(scheduler, steps: int) -> None:
    import warnings

    import torch

    inner = getattr(scheduler, "scheduler", scheduler)  # accelerate's wrapper
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "lr_scheduler.step() before optimizer.step()": on purpose here
        if isinstance(inner, torch.optim.lr_scheduler.LambdaLR):  # every transformers schedule: O(1)
            inner.last_epoch = steps - 1
            inner.step()
        else:
            for _ in range(steps):
                inner.step()


def teacher_note(saved: dict | None, checkpoint: str, args) -> str | None:
    """The [`ResumeAdjustments`] note when `checkpoint`'s objective did not train the teacher and this one uses it."""
    if saved is None or saved.get("uses_teacher", True) or not args.build_loss().uses_teacher:
        return None
    return (
        f"{checkpoint} was trained with --objective {saved.get('objective')}, which never updates the teacher: the "
        f"teacher starts from the student, as at the start of training, for --objective {args.objective}"
    )


__all__ = [
    "ResumeAdjustments",
    "check_checkpoint",
    "check_model_fits",
    "check_not_finished",
    "check_same_run",
    "run_fingerprint",
    "teacher_note",
]
