"""Preemption: SIGTERM, SIGUSR1 (SLURM's signals) and Ctrl-C (SIGINT) end the current optimizer step, write a
complete checkpoint and exit with 128 + the signal's number, exporting nothing; the next launch resumes and ends with
the weights of a run that was never interrupted, bit for bit, on one process and on two."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file
from test_run_mcd import ROOT, SCRIPT, TINY_RUN
from transformers import TrainerControl, TrainerState

MAX_STEPS = 10
FLAGS = [*TINY_RUN, "--max_steps", str(MAX_STEPS), "--save_strategy", "steps", "--save_steps", str(MAX_STEPS)]
FLAGS += ["--eval_synthetic", "false", "--seed", "11", "--log_level", "info"]

# Runs the training script in a fresh process that sends itself (or, under torchrun, its launcher) a signal in the
# middle of an optimizer step: after the forward of step PREEMPT_AT_STEP + 1, before its backward.
SENDER = textwrap.dedent(
    """
    import os, runpy, signal, sys
    from modeling_mcd.trainer.mcd_trainer import MCDTrainer

    at_step, signum = int(os.environ["PREEMPT_AT_STEP"]), getattr(signal, os.environ["PREEMPT_SIGNAL"])
    to_launcher = os.environ.get("PREEMPT_LAUNCHER") == "1"
    sender = int(os.environ.get("RANK", "0")) == int(os.environ.get("PREEMPT_RANK", "0"))
    compute_loss, sent = MCDTrainer.compute_loss, []

    def compute_loss_then_signal(self, model, inputs, *args, **kwargs):
        loss = compute_loss(self, model, inputs, *args, **kwargs)
        if model.training and sender and self.state.global_step == at_step and not sent:
            sent.append(True)
            os.kill(os.getppid() if to_launcher else os.getpid(), signum)
        return loss

    MCDTrainer.compute_loss = compute_loss_then_signal
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
    """
)


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **extra}


def _start(out, processes: int = 1, preempt_at: int | None = None, signal_name: str = "SIGTERM") -> subprocess.Popen:
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    extra = {}
    if preempt_at is not None:
        launcher = [*launcher, "-c", SENDER] if processes == 1 else [*launcher, "--no-python", sys.executable]
        extra = {"PREEMPT_AT_STEP": str(preempt_at), "PREEMPT_SIGNAL": signal_name}
        if processes > 1:  # rank 1 tells torchrun, which forwards the signal to every process
            launcher += ["-c", SENDER]
            extra.update(PREEMPT_LAUNCHER="1", PREEMPT_RANK="1")
    command = [*launcher, str(SCRIPT), *FLAGS, "--output_dir", str(out)]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    return subprocess.Popen(command, text=True, env=_env(**extra), cwd=ROOT, **pipes)


def _finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _run(out, processes: int = 1, **preemption) -> subprocess.CompletedProcess:
    return _finish(_start(out, processes, **preemption))


def _assert_same_weights(actual_dir, expected_dir) -> None:
    expected = load_file(expected_dir / "model.safetensors")
    actual = load_file(actual_dir / "model.safetensors")
    assert set(actual) == set(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, rtol=0, atol=0, msg=name)


def _checkpoint_steps(out) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))


@pytest.mark.slow
def test_sigterm_mid_step_checkpoints_exits_143_and_the_relaunch_ends_bit_exact(tmp_path):
    at = random.Random(1).randint(2, MAX_STEPS - 3)  # a seeded choice of the step
    whole = _start(tmp_path / "whole")  # the uninterrupted run, alongside
    preempted = _run(tmp_path / "cut", preempt_at=at)
    assert preempted.returncode == 143, preempted.stderr[-3000:]
    assert _checkpoint_steps(tmp_path / "cut") == [at + 1]  # the step under way was finished, then saved
    assert f"preempted by SIGTERM after step {at + 1}" in preempted.stderr
    assert not (tmp_path / "cut" / "mcd-model").exists()  # nothing exported as if finished

    resumed = _run(tmp_path / "cut")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {tmp_path / 'cut' / f'checkpoint-{at + 1}'}" in resumed.stderr
    whole = _finish(whole)
    assert whole.returncode == 0, whole.stderr[-3000:]
    _assert_same_weights(tmp_path / "cut" / f"checkpoint-{MAX_STEPS}", tmp_path / "whole" / f"checkpoint-{MAX_STEPS}")


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_preempted_through_torchrun_resume_bit_exact(tmp_path):
    at = random.Random(2).randint(2, MAX_STEPS - 4)
    whole = _start(tmp_path / "whole", processes=2)  # the uninterrupted run, alongside
    preempted = _run(tmp_path / "cut", processes=2, preempt_at=at)
    assert preempted.returncode != 0
    steps = _checkpoint_steps(tmp_path / "cut")
    assert len(steps) == 1 and at < steps[0] < MAX_STEPS, preempted.stderr[-3000:]  # both processes stopped alike
    assert preempted.stderr.count(f"preempted by SIGTERM after step {steps[0]}") == 2  # each process says so
    assert not (tmp_path / "cut" / "mcd-model").exists()

    resumed = _run(tmp_path / "cut", processes=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    whole = _finish(whole)
    assert whole.returncode == 0, whole.stderr[-3000:]
    _assert_same_weights(tmp_path / "cut" / f"checkpoint-{MAX_STEPS}", tmp_path / "whole" / f"checkpoint-{MAX_STEPS}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_each_preemption_signal_stops_after_the_step_with_a_save(signum):
    from modeling_mcd.trainer.errors import Preempted, exit_status
    from modeling_mcd.trainer.preemption import PreemptionCallback

    callback = PreemptionCallback()
    before = signal.getsignal(signum)
    state, control = TrainerState(global_step=5), TrainerControl()
    args = type("Args", (), {"world_size": 1, "device": torch.device("cpu")})()
    with callback.handling_signals():
        callback.on_step_end(args, state, control)
        assert not (control.should_save or control.should_training_stop)  # nothing received yet
        os.kill(os.getpid(), signum)
        os.kill(os.getpid(), signum)  # a second one (torchrun forwards what the terminal sent too) changes nothing
        callback.on_step_end(args, state, control)
    assert control.should_save and control.should_training_stop
    assert (callback.signal, callback.stopped_after) == (signum, 5)
    assert signal.getsignal(signum) == before  # the handlers are given back
    assert exit_status(Preempted(signum, 5, "checkpoint-5"))[0] == 128 + signum  # the shell's code for the signal
