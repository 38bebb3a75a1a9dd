"""Two runs on one output_dir: the second refuses, naming the first (PID and host, from the lock file in the
folder); a lock left by a run that died is taken over, with a log line."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys

import pytest
from test_run_mcd import TINY_RUN, _load_script

LOCK = ".run.lock"


def _dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _args(out) -> list[str]:
    return [*TINY_RUN, "--output_dir", str(out), "--eval_synthetic", "false", "--max_steps", "1"]


def test_a_second_run_on_a_folder_in_use_is_refused_naming_the_first(tmp_path):
    run_mcd = _load_script()
    out = tmp_path / "run"
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        out.mkdir()
        (out / LOCK).write_text(json.dumps({"pid": owner.pid, "host": socket.gethostname()}))
        with pytest.raises(ValueError, match=rf"{out} is in use by another run \(PID {owner.pid} on "):
            run_mcd.main(_args(out))
        assert not (out / "mcd-model").exists()
        assert json.loads((out / LOCK).read_text())["pid"] == owner.pid  # the owner's lock is left alone
    finally:
        owner.kill()
        owner.wait()


def test_a_stale_lock_is_taken_over_with_a_log_line_and_released_at_the_end(tmp_path, caplog):
    run_mcd = _load_script()
    out = tmp_path / "run"
    out.mkdir()
    dead = _dead_pid()
    (out / LOCK).write_text(json.dumps({"pid": dead, "host": socket.gethostname()}))
    caplog.set_level(logging.WARNING)
    run_mcd.main(_args(out))
    assert (out / "mcd-model" / "model.safetensors").is_file()
    assert any("stale lock" in r.getMessage() and f"PID {dead}" in r.getMessage() for r in caplog.records)
    assert not (out / LOCK).exists()  # released when the run ended


def test_the_lock_names_its_owner_and_is_released_once():
    import tempfile

    from modeling_mcd.trainer.run_lock import RunLock

    with tempfile.TemporaryDirectory() as folder:
        lock = RunLock.acquire(folder)
        record = json.loads(open(os.path.join(folder, LOCK)).read())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        with pytest.raises(ValueError, match=r"in use by another run"):
            RunLock.acquire(folder)  # this process holds it: a second run in it is another run too
        lock.release()
        lock.release()
        assert not os.path.exists(os.path.join(folder, LOCK))
        RunLock.acquire(folder).release()
