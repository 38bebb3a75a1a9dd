# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""How a run ends when it does not end well, and the exit code and line each way gets.

A launch script prints a problem the user can fix as one line and exits with 2, as argparse and the `mcd` command
do; a bug keeps its traceback (exit code 1), so that it can be reported. The rule that tells them apart, applied by
[`exit_status`]:

- [`UsageError`] (a `ValueError`): raised by the run's own checks of its arguments, data and run folder;
- a `ValueError` of a class of this package (`LeakError`, `BadSampleError` of `modeling_mcd.data`), and any other
  `ValueError` whose `raise` statement is in this package (its argument, data and evaluation checks), in the launch
  script, or in transformers' `TrainingArguments` checks: those are deliberate checks with a message for the user;
- an `OSError` saying the disk or the quota is full;

are user errors (exit code 2). [`EvaluationError`] (the model was saved, its final evaluation failed) exits with 3,
[`Preempted`] with 128 + the signal's number, the shell's code for a process ended by that signal. Everything else is
a bug. With the environment variable `MCD_DEBUG=1` a user error shows its traceback too.
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

#: Exit code of a user error (arguments, data, run folder, disk).
USAGE_EXIT_CODE = 2
#: Exit code of a run whose model was trained and saved but whose final evaluation failed.
EVALUATION_EXIT_CODE = 3

#: `errno` values of a full disk or quota.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)

_PACKAGE_DIR = Path(__file__).resolve().parent
# Where deliberate checks raise: this package, and transformers' own argument validation (e.g. an output_dir that is
# not a folder, an eval strategy that needs eval steps).
_CHECKING_FILES = ("transformers/training_args.py", "transformers/hf_argparser.py")


class UsageError(ValueError):
    """A problem the user can fix (an argument, the data, the run folder), raised by the run's checks; its message
    names what is wrong and what to do."""


class EvaluationError(RuntimeError):
    """The trained model is saved, but its final evaluation failed; the cause is chained (`__cause__`)."""


class DiskFullError(OSError):
    """The disk (or the quota) filled up while the run wrote something; the message says what, and what is kept."""

    def __init__(self, message: str, filename: str | None = None):
        super().__init__(errno.ENOSPC, message, filename)

    def __str__(self) -> str:
        return self.strerror


class Preempted(Exception):
    r"""
    Training stopped on a preemption signal after a complete checkpoint; relaunching resumes from it.

    Args:
        signum (`int`): the signal received.
        step (`int`): the last optimizer step taken, the checkpoint's.
        checkpoint (`str`): the checkpoint folder written.
    """

    def __init__(self, signum: int, step: int, checkpoint: str):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(
            f"preempted by {signal.Signals(signum).name} after step {step}: {checkpoint} is complete; launch the same "
            "command again to resume from it"
        )


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` is an `OSError` of a full disk or quota."""
    return isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS


def _raised_in(error: BaseException, roots: tuple[Path, ...]) -> bool:
    traceback = error.__traceback__
    if traceback is None:
        return False
    while traceback.tb_next is not None:  # the innermost frame: where the `raise` statement is
        traceback = traceback.tb_next
    filename = Path(traceback.tb_frame.f_code.co_filename).resolve()
    if any(filename.as_posix().endswith(suffix) for suffix in _CHECKING_FILES):
        return True
    return any(filename.is_relative_to(root) for root in roots)


def exit_status(error: BaseException, own_code: tuple[str | os.PathLike, ...] = ()) -> tuple[int, str] | None:
    r"""
    The exit code and the one line for an error that is not a bug, or `None` for a bug.

    Args:
        error (`BaseException`): the error that ended the run, with its traceback.
        own_code (`tuple`, *optional*): more files or folders whose `ValueError`s are deliberate checks (the launch
            script).

    Returns:
        `(exit code, message)` or `None`.
    """
    if isinstance(error, Preempted):
        return 128 + error.signum, str(error)
    if isinstance(error, EvaluationError):
        return EVALUATION_EXIT_CODE, str(error)
    if isinstance(error, UsageError):
        return USAGE_EXIT_CODE, str(error)
    if isinstance(error, DiskFullError):
        return USAGE_EXIT_CODE, str(error)
    if is_disk_full(error):
        where = f" writing {error.filename}" if error.filename else ""
        return USAGE_EXIT_CODE, f"no space left on device{where}: free some space and launch again"
    if isinstance(error, ValueError):
        # The package's own error classes (LeakError, BadSampleError) are deliberate wherever they are raised.
        if type(error).__module__.split(".")[0] == __name__.split(".")[0]:
            return USAGE_EXIT_CODE, str(error)
        if _raised_in(error, (_PACKAGE_DIR, *(Path(p).resolve() for p in own_code))):
            return USAGE_EXIT_CODE, str(error)
    return None


def debug_requested() -> bool:
    """Whether `MCD_DEBUG` asks for the traceback of every error."""
    return os.environ.get("MCD_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


__all__ = [
    "DISK_FULL_ERRNOS",
    "EVALUATION_EXIT_CODE",
    "USAGE_EXIT_CODE",
    "DiskFullError",
    "EvaluationError",
    "Preempted",
    "UsageError",
    "debug_requested",
    "exit_status",
    "is_disk_full",
]
