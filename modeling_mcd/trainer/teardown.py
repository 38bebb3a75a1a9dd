# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""The end of a distributed run: every process group destroyed, and its threads ended, before the interpreter exits.

`torch.distributed.destroy_process_group()` shuts the groups down and forgets them, but a gloo group's worker and
transport threads end only when its last reference goes. DeepSpeed keeps its own references (a clone of the world
group, in `deepspeed.utils.groups`), and the trainer's engine holds more in reference cycles; so those threads used to
outlive `main` (seen: both groups' threads alive in the `atexit` handlers of a ZeRO-2 run) and meet the interpreter's
finalisation, where a C++ thread that needs the GIL is torn down; once in CI a process of a run that had finished and
saved everything aborted there (`terminate called without an active exception`, SIGABRT).

`release_process_groups` ends them while the interpreter is whole. DeepSpeed still keeps a reference to the world group
somewhere Python cannot reach, so a distributed run's process then leaves by `exit_before_finalization`, which runs
everything a normal exit runs except the finalisation itself.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import threading
from typing import NoReturn

import torch


def release_process_groups() -> bool:
    """Destroy every process group of this process and free them, so that their threads end now.

    A no-op outside a distributed run. With DeepSpeed's communication layer initialised, its
    `deepspeed.comm.destroy_process_group` is used: it destroys the groups and also drops DeepSpeed's own references to
    them. Not a collective: call it once every process is done communicating (after the run's last
    `wait_for_everyone`), or on the way out of a failed run.

    Returns:
        `bool`: whether there were process groups to release.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return False
    deepspeed_comm = sys.modules.get("deepspeed.comm")  # imported only by a run that uses DeepSpeed
    if deepspeed_comm is not None and deepspeed_comm.is_initialized():
        deepspeed_comm.destroy_process_group()
    else:
        torch.distributed.destroy_process_group()
    # The groups still referenced from reference cycles (the trainer's engine and optimizer) go here, their threads
    # joined by the backends' destructors, instead of during the interpreter's finalisation.
    gc.collect()
    return True


def exit_before_finalization(code: int) -> NoReturn:
    """End the process with exit status `code` as `sys.exit` would, without the interpreter's finalisation.

    What a normal exit does first is done here too, in its order: wait for the non-daemon threads, run the `atexit`
    handlers (logging's flush, trackers' `finish`), flush stdout and stderr. Only the teardown of the interpreter's
    objects is skipped, where a C++ thread of a process group still alive can abort the process.
    """
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or its reader gone: nothing more can be written anyway
            pass
    os._exit(code)
