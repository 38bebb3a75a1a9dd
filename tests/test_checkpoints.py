# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""modeling_mcd.trainer.checkpoints: a process killed (SIGKILL) in the middle of writing a checkpoint leaves nothing
that looks resumable; the resumed run continues from the last complete checkpoint and ends with the weights of a run
that was never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file
from test_run_mcd import ROOT, SCRIPT, TINY_RUN

from modeling_mcd.trainer.checkpoints import STAGING_DIR, last_checkpoint

pytestmark = pytest.mark.slow

KILLED_SAVE = 4  # the save of step 4 is killed after the model is written, before the optimizer
FLAGS = [*TINY_RUN, "--max_steps", "6", "--save_strategy", "steps", "--save_steps", "2", "--save_total_limit", "1"]
FLAGS += ["--eval_max_samples", "3", "--seed", "7", "--log_level", "info"]

# Runs the training script in a fresh process whose Trainer kills the process (SIGKILL: no cleanup, no atexit)
# while it writes the checkpoint of step KILLED_SAVE: the model file is written, the optimizer not yet.
KILLER = textwrap.dedent(
    f"""
    import os, runpy, signal, sys
    from modeling_mcd.trainer.mcd_trainer import MCDTrainer

    save = MCDTrainer._save_optimizer_and_scheduler

    def killing_save(self, output_dir):
        if self.state.global_step == {KILLED_SAVE}:
            os.kill(os.getpid(), signal.SIGKILL)
        return save(self, output_dir)

    MCDTrainer._save_optimizer_and_scheduler = killing_save
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
    """
)


def _run(out, killer: bool) -> subprocess.CompletedProcess:
    prefix = [sys.executable, "-c", KILLER] if killer else [sys.executable]
    command = [*prefix, str(SCRIPT), *FLAGS, "--output_dir", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_a_save_killed_midway_is_never_resumed_from(tmp_path):
    killed = _run(tmp_path / "run", killer=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    out = tmp_path / "run"
    half = out / STAGING_DIR / f"checkpoint-{KILLED_SAVE}"
    assert (half / "model.safetensors").is_file() and not (half / "optimizer.pt").exists()  # really half-written
    assert not (out / f"checkpoint-{KILLED_SAVE}").exists()
    assert last_checkpoint(str(out)) == str(out / "checkpoint-2")  # the last complete one survived the rotation

    resumed = _run(out, killer=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr and "checkpoint-2" in resumed.stderr
    uninterrupted = _run(tmp_path / "whole", killer=False)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    expected = load_file(tmp_path / "whole" / "checkpoint-6" / "model.safetensors")
    actual = load_file(out / "checkpoint-6" / "model.safetensors")
    assert set(actual) == set(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, rtol=0, atol=0, msg=name)
    assert not os.listdir(out / STAGING_DIR)  # the step-4 save of the resumed run replaced the half-written one
