# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""One run per run folder: a lock file in `output_dir` names the run that owns it.

Two runs writing into one `output_dir` would interleave their checkpoints, rotate each other's out and resume from
each other's steps. The first run creates `output_dir/.run.lock` holding its PID, its host and its process start time
(created complete, by a hard link, so a lock file is never seen half-written); a second run finds it and refuses,
naming the owner. A lock whose owner is gone (a run killed with `kill -9`, a crashed node) is stale: on the owner's
host, a PID that is not alive, or alive with another start time (the PID was reused), shows it, and the lock is taken
over with a log line. A lock from another host cannot be checked from here: the message says which file to delete
once that run is known to be over. In a multi-process run only the main process takes the lock.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time

from .errors import UsageError

logger = logging.getLogger(__name__)

#: The lock file's name inside the run folder.
LOCK_NAME = ".run.lock"


def _start_time(pid: int) -> str | None:
    """The start time of process `pid` in clock ticks since boot (Linux's /proc), or `None` where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name (field 2) may hold spaces


def _alive(pid: int, start_time: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    current = _start_time(pid)
    return start_time is None or current is None or current == start_time


class RunLock:
    r"""
    The lock of one run folder, held by this process; [`RunLock.acquire`] takes it.

    Args:
        path (`str`): the lock file.
    """

    def __init__(self, path: str):
        self.path = path
        self._held = True

    @classmethod
    def acquire(cls, output_dir: str) -> RunLock:
        r"""
        Take the lock of `output_dir` (created if needed), or raise [`UsageError`] naming the run that holds it.

        Args:
            output_dir (`str`): the run folder.
        """
        os.makedirs(output_dir, exist_ok=True)
        path = os.path.join(output_dir, LOCK_NAME)
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "start_time": _start_time(os.getpid()),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        staging = f"{path}.{record['host']}.{record['pid']}"
        with open(staging, "w") as handle:
            json.dump(record, handle)
        try:
            for _ in range(2):  # a stale lock is removed once, then taken like a free one
                try:
                    os.link(staging, path)  # fails if the lock exists: taking it is atomic
                    return cls(path)
                except FileExistsError:
                    cls._remove_if_stale(path, output_dir)
            raise UsageError(f"{output_dir} is in use by another run, which took its lock {path} just now")
        finally:
            os.remove(staging)

    @staticmethod
    def _remove_if_stale(path: str, output_dir: str) -> None:
        try:
            with open(path) as handle:
                owner = json.load(handle)
            pid, host = int(owner["pid"]), str(owner["host"])
        except FileNotFoundError:
            return  # released meanwhile: try again
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise UsageError(
                f"{output_dir} has a lock file {path} that cannot be read ({error}): delete it if no run uses it"
            ) from error
        since = f" since {owner['since']}" if owner.get("since") else ""
        if host != socket.gethostname():
            raise UsageError(
                f"{output_dir} is in use by another run (PID {pid} on {host}{since}); use another --output_dir, or "
                f"delete {path} once that run is known to be over"
            )
        if _alive(pid, owner.get("start_time")):
            raise UsageError(
                f"{output_dir} is in use by another run (PID {pid} on {host}{since}); wait for it to end or use "
                "another --output_dir"
            )
        logger.warning("%s: taking over the stale lock of PID %d on %s%s (not running)", output_dir, pid, host, since)
        try:
            os.remove(path)
        except FileNotFoundError:
            pass

    def release(self) -> None:
        """Remove the lock file, if this process still holds it (idempotent)."""
        if not self._held:
            return
        self._held = False
        try:
            with open(self.path) as handle:
                owner = json.load(handle)
            if int(owner["pid"]) == os.getpid() and owner["host"] == socket.gethostname():
                os.remove(self.path)
        except (OSError, ValueError, KeyError):
            pass  # gone or replaced: nothing of ours to remove


def lock_run_folder(output_dir: str, is_main_process: bool, world_size: int) -> RunLock | None:
    r"""
    Take the lock of `output_dir` on the main process; every process raises the same [`UsageError`] when it is held
    by another run.

    Args:
        output_dir (`str`): the run folder.
        is_main_process (`bool`): whether this is the process that takes the lock (global rank 0).
        world_size (`int`): the number of processes, which all call this.

    Returns:
        [`RunLock`] on the main process, `None` on the others.
    """
    lock, refusal = None, None
    if is_main_process:
        try:
            lock = RunLock.acquire(output_dir)
        except UsageError as error:
            refusal = str(error)
    if world_size > 1:  # the other processes must stop too, not wait for the main one at the next collective
        from accelerate.utils import broadcast_object_list

        refusal = broadcast_object_list([refusal])[0]
    if refusal is not None:
        raise UsageError(refusal)
    return lock


__all__ = ["LOCK_NAME", "RunLock", "lock_run_folder"]
