# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""The checks of a run that need its data or its model, made before the first step; and the one made after training.

The flags alone are checked when they are parsed (`modeling_mcd.trainer.arguments`,
`modeling_mcd.trainer.training_arguments`). What depends on the data (how many rows are usable) or on the model (how
many positions the text tower has) is known only later, but still before training: a run that would take no step, end
each epoch on a batch of a single pair (nothing to contrast: its contrastive and distillation losses are 0), or index
past the text tower's position embeddings on its first long caption, stops there with a [`UsageError`] naming the
numbers and the flags. A stream's length is not known before it is read: [`check_steps_taken`] then fails a run that
ended without a step, before anything is exported as if it had trained.
"""

from __future__ import annotations

from .errors import UsageError


def check_text_positions(text_config, max_seq_length: int) -> None:
    r"""
    Raise [`UsageError`] when `--max_seq_length` exceeds the text tower's positions (`max_position_embeddings`).

    Args:
        text_config (`PretrainedConfig`): the text tower's config.
        max_seq_length (`int`): `--max_seq_length`, the longest tokenized caption ([CLS] and [SEP] included).
    """
    positions = getattr(text_config, "max_position_embeddings", None)
    if positions is not None and max_seq_length > positions:
        raise UsageError(
            f"--max_seq_length {max_seq_length} is longer than the text tower's max_position_embeddings {positions}: "
            f"a caption that long would index past its position embeddings; give --max_seq_length {positions} or less"
        )


def check_batches(rows: int, args) -> None:
    r"""
    Raise [`UsageError`] when `rows` usable training rows give no batch, or end each epoch on a batch of one pair.

    Args:
        rows (`int`): the usable rows of a map-style training set (rows known bad are not counted).
        args (`MCDTrainingArguments`): the batch size, processes, accumulation and `--dataloader_drop_last`.
    """
    per_device, processes = args.per_device_train_batch_size, args.world_size
    batch = per_device * processes
    shape = f"--per_device_train_batch_size {per_device} x {processes} process{'es' if processes > 1 else ''}"
    if rows == 0:
        raise UsageError("no usable training row: every row of the training data was skipped (see the log)")
    if args.dataloader_drop_last and rows < batch:
        raise UsageError(
            f"{rows} usable training rows make no batch of {batch} pairs ({shape}, --dataloader_drop_last true): "
            "there is no step to take. Lower --per_device_train_batch_size, or set --dataloader_drop_last false"
        )
    if not args.dataloader_drop_last and processes == 1:
        # Several processes even out their last batches (accelerate repeats samples); one process keeps the remainder,
        # and a step's micro-batches form one contrastive batch (`modeling_mcd.trainer.accumulation`).
        per_step = per_device * args.gradient_accumulation_steps
        if rows % per_step == 1:
            raise UsageError(
                f"{rows} usable training rows in steps of {per_step} pairs leave a last batch of 1 pair each epoch, "
                "whose contrastive and distillation losses are 0 (nothing to contrast it with): set "
                "--dataloader_drop_last true, or another --per_device_train_batch_size"
            )


def check_steps_taken(first_step: int, last_step: int, args) -> None:
    r"""
    Raise [`UsageError`] when training ended at the step it started from: no optimizer step was taken.

    Args:
        first_step (`int`): the step training started from (the resumed checkpoint's, or 0).
        last_step (`int`): the step it ended at.
        args (`MCDTrainingArguments`)
    """
    if last_step > first_step:
        return
    batch = args.per_device_train_batch_size * args.world_size
    raise UsageError(
        f"the run took no optimizer step (it ended at step {last_step}, where it started): the training data gave no "
        f"batch of {batch} pairs (--per_device_train_batch_size {args.per_device_train_batch_size} x {args.world_size} "
        f"process(es), --dataloader_drop_last {str(args.dataloader_drop_last).lower()}); nothing is exported"
    )


__all__ = ["check_batches", "check_steps_taken", "check_text_positions"]
