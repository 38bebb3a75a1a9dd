# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Checkpoints that are never resumed from half-written.

The Trainer writes a checkpoint file by file into `output_dir/checkpoint-N`; a process killed in the middle (a
pre-empted node, an out-of-memory kill) leaves a folder that looks like the newest checkpoint but lacks the
optimizer, the scheduler or the RNG states, and a resumed run would silently continue from it. Here every
checkpoint is written into `output_dir/.partial/checkpoint-N` and renamed to `output_dir/checkpoint-N` only when
every process has finished writing it (a rename within one filesystem is atomic); older checkpoints are rotated out
only after that. `last_checkpoint` therefore only ever finds complete checkpoints.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint, rotate_checkpoints
from transformers.utils import logging

logger = logging.get_logger(__name__)

#: Where checkpoints are written before they are complete, inside the run folder.
STAGING_DIR = ".partial"


def save_checkpoint_atomically(trainer, save: Callable[[], None], run_dir: str) -> str:
    r"""
    Run the Trainer's own checkpoint save into the staging folder, then publish the checkpoint under its name.

    Args:
        trainer (`transformers.Trainer`): the trainer (its `state`, `args`, `accelerator`, `_get_output_dir`).
        save (`Callable`): the Trainer's `_save_checkpoint`, bound to its model and trial.
        run_dir (`str`): the folder the checkpoint belongs in.

    Returns:
        `str`: the published checkpoint folder.
    """
    name = f"{PREFIX_CHECKPOINT_DIR}-{trainer.state.global_step}"
    staging, final = os.path.join(run_dir, STAGING_DIR), os.path.join(run_dir, name)
    limit = trainer.args.save_total_limit
    # The Trainer writes into `_get_output_dir()/checkpoint-N` and then rotates old checkpoints: point it at the
    # staging folder, and rotate only once the new checkpoint is published.
    trainer._get_output_dir = lambda trial=None: staging
    trainer.args.save_total_limit = None
    try:
        save()
    finally:
        del trainer._get_output_dir  # the instance attribute shadowed the method
        trainer.args.save_total_limit = limit
    trainer.accelerator.wait_for_everyone()  # every process has written its part (DeepSpeed shards, RNG states)
    if trainer.args.should_save:
        if os.path.isdir(final):  # the same step saved again (a resumed run): the new one replaces it
            shutil.rmtree(final)
        os.replace(os.path.join(staging, name), final)
        rotate_checkpoints(
            output_dir=run_dir,
            save_total_limit=limit,
            best_model_checkpoint=trainer.state.best_model_checkpoint,
            use_mtime=True,
        )
    trainer.accelerator.wait_for_everyone()
    return final


def last_checkpoint(output_dir: str) -> str | None:
    r"""
    The newest complete checkpoint in `output_dir`, or `None`. Checkpoints still in the staging folder (a save that
    was killed) are not candidates; they are reported, and replaced by the next save of the same step.
    """
    if not os.path.isdir(output_dir):
        return None
    staging = os.path.join(output_dir, STAGING_DIR)
    if os.path.isdir(staging) and os.listdir(staging):
        logger.warning("ignoring half-written checkpoints in %s: %s", staging, sorted(os.listdir(staging)))
    return get_last_checkpoint(output_dir)


__all__ = ["STAGING_DIR", "last_checkpoint", "save_checkpoint_atomically"]
