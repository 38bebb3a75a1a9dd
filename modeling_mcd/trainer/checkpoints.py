# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Checkpoints that are never resumed from half-written.

The Trainer writes a checkpoint file by file into `output_dir/checkpoint-N`; a process killed in the middle (a
pre-empted node, an out-of-memory kill) leaves a folder that looks like the newest checkpoint but lacks the
optimizer, the scheduler or the RNG states, and a resumed run would silently continue from it. Here every
checkpoint is written into `output_dir/.partial/checkpoint-N` and renamed to `output_dir/checkpoint-N` only when
every process has finished writing it (a rename within one filesystem is atomic); older checkpoints are rotated out
only after that. `last_checkpoint` therefore only ever finds complete checkpoints.

Each checkpoint also holds the run's fingerprint (`modeling_mcd.trainer.fingerprint`: what data and model it was trained
on), when the trainer has one (`trainer.run_fingerprint`), so that a later launch can tell its own checkpoints from
another run's. A full disk during a save is reported as such ([`DiskFullError`]), the half-written checkpoint removed to
give its space back; the last complete checkpoint stays.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint, rotate_checkpoints
from transformers.utils import logging

from .errors import DiskFullError, is_disk_full
from .fingerprint import FINGERPRINT_NAME, write_json

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
        fingerprint = getattr(trainer, "run_fingerprint", None)
        if fingerprint is not None and trainer.args.should_save:
            write_json(os.path.join(staging, name), FINGERPRINT_NAME, fingerprint)
    except OSError as error:
        if not is_disk_full(error):
            raise
        shutil.rmtree(os.path.join(staging, name), ignore_errors=True)  # gives back what the partial save took
        kept = last_checkpoint(run_dir)
        kept = f"{os.path.basename(kept)} is the last complete checkpoint" if kept else "no checkpoint is complete"
        raise DiskFullError(
            f"disk full while writing {name} in {run_dir} ({error.filename or error}): {kept}; free some space and "
            "launch again to resume",
            error.filename,
        ) from error
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


def clear_run_folder(output_dir: str) -> list[str]:
    r"""
    Delete what a run resumes from in `output_dir`: its checkpoints (complete and half-written) and its vocabulary
    (`tokenizer/`), for `--overwrite_output_dir`. The exported model and the logs are replaced by the new run's.

    Returns:
        `list[str]`: the names deleted.
    """
    if not os.path.isdir(output_dir):
        return []
    prefix = f"{PREFIX_CHECKPOINT_DIR}-"
    names = sorted(
        name
        for name in os.listdir(output_dir)
        if name in (STAGING_DIR, "tokenizer") or (name.startswith(prefix) and name[len(prefix) :].isdigit())
    )
    for name in names:
        shutil.rmtree(os.path.join(output_dir, name))
    if names:
        logger.warning("--overwrite_output_dir: deleted %s from %s", ", ".join(names), output_dir)
    return names


__all__ = ["STAGING_DIR", "clear_run_folder", "last_checkpoint", "save_checkpoint_atomically"]
