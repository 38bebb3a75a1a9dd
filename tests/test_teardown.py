# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""The end of a distributed run (`modeling_mcd.trainer.teardown`): the groups' threads end before the interpreter's
finalisation, and the exit that skips the finalisation still does what a normal exit does.

Also a worker: `torchrun --nproc_per_node 2 test_teardown.py release OUT_DIR` and `python test_teardown.py exit OUT_DIR`.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from modeling_mcd.trainer.teardown import exit_before_finalization, release_process_groups

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _gloo_threads() -> int:
    """The gloo worker and transport threads of this process (Linux names them; the tests run on Linux)."""
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            names.append(Path(f"/proc/self/task/{task}/comm").read_text().strip())
        except OSError:  # a thread that ended while listed
            pass
    return sum(name.startswith(("pt_gloo", "gloo")) for name in names)


def release_worker(out_dir: Path) -> None:
    """A DeepSpeed-style process: torch's world group, DeepSpeed's communication layer and its clone of the world group
    (what every DeepSpeed engine makes), a collective on each; then `release_process_groups`."""
    import deepspeed.comm as deepspeed_comm
    from deepspeed.utils import groups

    dist.init_process_group("gloo")
    deepspeed_comm.init_distributed(dist_backend="gloo")
    clone = groups._clone_world_group()
    for group in (None, clone):
        tensor = torch.ones(3)
        dist.all_reduce(tensor, group=group)
        assert tensor.tolist() == [2.0] * 3
    del clone
    before = _gloo_threads()
    released = release_process_groups()
    result = {
        "released": released,
        "before": before,
        "after": _gloo_threads(),
        "initialized": dist.is_initialized(),
        "deepspeed_initialized": deepspeed_comm.is_initialized(),
        "deepspeed_world_clone": groups._WORLD_GROUP is not None,
        "again": release_process_groups(),
    }
    (out_dir / f"rank{os.environ['RANK']}.json").write_text(json.dumps(result))


def exit_worker(out_dir: Path) -> None:
    """A process with a group, an `atexit` handler, a non-daemon thread still working and unflushed output, that leaves
    by `exit_before_finalization(7)`."""
    dist.init_process_group("gloo", init_method=f"file://{out_dir / 'store'}", rank=0, world_size=1)
    atexit.register(lambda: (out_dir / "atexit").write_text("ran"))

    def late_writer() -> None:
        time.sleep(0.5)
        (out_dir / "thread").write_text("finished")

    threading.Thread(target=late_writer).start()
    sys.stdout.write("the last line, not flushed")
    exit_before_finalization(7)


@pytest.mark.distributed
def test_release_ends_the_deepspeed_groups_threads(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*command, __file__, "release", str(tmp_path)], capture_output=True, text=True, env=ENV, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in range(2):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert result["released"] and not result["again"]  # the second call finds nothing to release
        assert not result["initialized"] and not result["deepspeed_initialized"]
        assert not result["deepspeed_world_clone"]  # DeepSpeed's own reference dropped
        # The clone's threads ended here, not in the interpreter's finalisation (torch's destroy alone left them all).
        assert result["after"] < result["before"], result


def test_release_outside_a_distributed_run_does_nothing():
    assert not dist.is_initialized()
    assert release_process_groups() is False


def test_exit_before_finalization_still_does_what_an_exit_does(tmp_path):
    done = subprocess.run(
        [sys.executable, __file__, "exit", str(tmp_path)], capture_output=True, text=True, env=ENV, timeout=120
    )
    assert done.returncode == 7, done.stderr[-3000:]
    assert done.stdout.endswith("the last line, not flushed")
    assert (tmp_path / "thread").read_text() == "finished"  # non-daemon threads are waited for
    assert (tmp_path / "atexit").read_text() == "ran"


if __name__ == "__main__":
    {"release": release_worker, "exit": exit_worker}[sys.argv[1]](Path(sys.argv[2]))
