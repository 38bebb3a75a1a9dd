# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Preemption: a signal ends the current optimizer step, a complete checkpoint is written, and the run exits.

Clusters announce the end of a job with a signal and kill it a grace period later: SLURM sends SIGTERM (or, with
`--signal=USR1@120`, SIGUSR1) before SIGKILL; a user presses Ctrl-C (SIGINT). Without a handler the process dies
in the middle of a step and the work since the last scheduled checkpoint is lost. While training runs,
[`PreemptionCallback.handling_signals`] replaces the handlers of these three signals by one that only records the
signal; at the end of the optimizer step (`on_step_end`) the callback asks the Trainer to save a checkpoint
(written atomically, `modeling_mcd.trainer.checkpoints`) and to stop. The launch script then exits with 128 + the
signal's number (143 for SIGTERM, 138 for SIGUSR1, 130 for SIGINT), exporting nothing, and the next launch resumes from
that checkpoint exactly (the checkpoint holds the optimizer, scheduler and RNG states, and everything random depends on
the step).

Processes receive a signal at slightly different times (torchrun forwards it to its workers one by one), so they must
agree on the step at which they all stop and save: at every step's end they take the maximum of the signals received
with one all-reduce of a single integer on the CPU (a gloo group; no device synchronisation). A repeated signal
changes nothing: a terminal's Ctrl-C reaches the workers directly and through torchrun. To stop at once, send SIGKILL.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

import torch
from transformers import TrainerCallback
from transformers.utils import logging

logger = logging.get_logger(__name__)

#: The signals that stop a run with a checkpoint.
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class PreemptionCallback(TrainerCallback):
    """
    Stops training after the optimizer step during which a preemption signal arrived, with a checkpoint.

    Attributes:
        signal (`int` or `None`): the signal every process agreed on, once the run stops.
        stopped_after (`int` or `None`): the step after which the run stopped (its checkpoint's).
    """

    def __init__(self):
        self.received: int | None = None  # set by the handler, in this process
        self.signal: int | None = None
        self.stopped_after: int | None = None
        self._group = None

    def _record(self, signum, frame) -> None:
        # Only a flag: a handler runs between two bytecodes of whatever the main thread does (a log call included).
        if self.received is None:
            self.received = signum

    @contextlib.contextmanager
    def handling_signals(self) -> Iterator[PreemptionCallback]:
        """Within the block the preemption signals are recorded, not acted on; the previous handlers come back at its
        end. Outside the main thread (where Python cannot set handlers) the block changes nothing."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {signum: signal.signal(signum, self._record) for signum in PREEMPTION_SIGNALS}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def on_train_begin(self, args, state, control, **kwargs):
        if args.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            # The agreement all-reduce runs on the CPU, so that it never waits on the accelerator's queue.
            if torch.distributed.get_backend() == "gloo":
                self._group = torch.distributed.group.WORLD
            else:
                self._group = torch.distributed.new_group(backend="gloo")

    def _agreed_signal(self, args) -> int:
        received = torch.tensor([self.received or 0], dtype=torch.int64)
        if self._group is not None:
            torch.distributed.all_reduce(received, op=torch.distributed.ReduceOp.MAX, group=self._group)
        return int(received.item())

    def on_step_end(self, args, state, control, **kwargs):
        signum = self._agreed_signal(args)
        if not signum or self.stopped_after is not None:
            return
        self.signal, self.stopped_after = signum, state.global_step
        control.should_save = True
        control.should_training_stop = True
        logger.warning(
            "%s received: stopping after step %d, with a checkpoint", signal.Signals(signum).name, state.global_step
        )


__all__ = ["PREEMPTION_SIGNALS", "PreemptionCallback"]
