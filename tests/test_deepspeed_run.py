"""training/run_mcd.py under DeepSpeed ZeRO-2 and ZeRO-3 (the Trainer's `--deepspeed`), 2 CPU processes (gloo).

Each 2-process run is checked against a 1-process run of the same tiny job:

- it exits 0, and the exported `mcd-model` folder loads with `AutoModel`, holds only the student (no teacher, no
  MLM head), and its weights are the student's of the last checkpoint (under ZeRO-3 they must be gathered from the
  shards first);
- the EMA teacher really moved: from the whole-model checkpoint saved after every step, the teacher of step k is
  `m·teacher(k−1) + (1 − m)·student(k)` for every parameter, including the small ones that ZeRO-3 keeps whole on
  every rank (`ds_persist`, DESIGN.md), with `m` the momentum the run logged;
- every step's loss terms agree with the 1-process run's within 5 %: each sample gets the same views and MLM mask
  on 1 and 2 processes (both are drawn for the whole global batch or per sample), but the text tower's dropout
  draws from each process's own RNG, and the difference grows a little with each step.

The 1-process reference of ZeRO-3 is ZeRO-3 itself: under ZeRO-3 transformers builds the model inside
`deepspeed.zero.Init` and initialises it once on rank 0, which draws the random init in another order than a plain
construction, so only a ZeRO-3 run starts from the same weights. ZeRO-2 builds the model plainly, so its reference is a
plain 1-process run without DeepSpeed.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel

from modeling_mcd import MCDModel
from modeling_mcd.teacher import momentum_at

from conftest import tiny_tokenizer
from test_run_mcd import ROOT, SCRIPT, TINY_RUN

NUM_STEPS = 3
GLOBAL_BATCH = 12
BASE_MOMENTUM = 0.5  # m = 0.5, 0.625, 0.875 over 3 steps: the teacher visibly moves

# Runs `training/run_mcd.py` in each process after two set-up steps that only a CPU-only DeepSpeed run needs:
# - DeepSpeed's CPU accelerator would JIT-compile a shared-memory all-reduce kernel (minutes of C++ on a fresh
#   machine) that only speeds up collectives; gloo does everything here.
# - `TrainingArguments` starts DeepSpeed without naming a backend, and accelerate finds none on a machine without
#   an accelerator, so every process would believe it is alone (world size 1). Setting accelerate's state up
#   with gloo first, and `use_configured_state` in the arguments' `accelerator_config`, gives it the real world.
LAUNCHER = """
import os, runpy, sys
import deepspeed
from accelerate import PartialState
deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
PartialState(backend="gloo")
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _flags(**overrides: str) -> list[str]:
    """`TINY_RUN` with some values replaced (`--use_cpu` dropped: accelerate turns DeepSpeed off on `cpu`)."""
    pairs = dict(zip(TINY_RUN[::2], TINY_RUN[1::2]))
    pairs.pop("--use_cpu")
    pairs.update({f"--{key}": value for key, value in overrides.items()})
    return [item for pair in pairs.items() for item in pair]


def _run(tmp_path: Path, name: str, nproc: int, stage: int | None) -> tuple[Path, dict]:
    """One tiny job; returns its output folder and `trainer_state.json` of the last checkpoint."""
    out = tmp_path / name
    tokenizer_dir = tmp_path / "tokenizer"
    if not tokenizer_dir.is_dir():
        # One fixed tokenizer for every run: a WordPiece vocab trained in each process could differ between them.
        tiny_tokenizer().save_pretrained(tokenizer_dir)
    flags = _flags(
        per_device_train_batch_size=str(GLOBAL_BATCH // nproc),
        max_steps=str(NUM_STEPS),
        save_strategy="steps",
        save_steps="1",
        save_total_limit=str(NUM_STEPS),
        base_momentum=str(BASE_MOMENTUM),
        tokenizer_name_or_path=str(tokenizer_dir),
        eval_max_samples="6",
        output_dir=str(out),
        seed="5",
    )
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    if stage is None:
        command = [*launch, str(SCRIPT), *flags, "--use_cpu", "true"]
    else:
        accelerator_config = tmp_path / "accelerator_config.json"
        accelerator_config.write_text(json.dumps({"use_configured_state": True}))
        deepspeed_config = ROOT / "training" / "deepspeed" / f"zero{stage}.json"
        command = [*launch, "--no-python", sys.executable, "-c", LAUNCHER, str(SCRIPT), *flags]
        command += ["--deepspeed", str(deepspeed_config), "--accelerator_config", str(accelerator_config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    errors = "\n".join(line for line in result.stderr.splitlines() if "Error" in line and "elastic" not in line)
    assert result.returncode == 0, f"{name} failed:\n{errors[-4000:]}\n...\n{result.stderr[-3000:]}"
    state = json.loads((out / f"checkpoint-{NUM_STEPS}" / "trainer_state.json").read_text())
    return out, state


def _step_logs(state: dict) -> dict[int, dict]:
    return {entry["step"]: entry for entry in state["log_history"] if "loss" in entry}


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("stage", [2, 3])
def test_two_process_deepspeed_run(tmp_path, stage):
    out, state = _run(tmp_path, f"zero{stage}-2proc", nproc=2, stage=stage)
    _, reference = _run(tmp_path, "reference-1proc", nproc=1, stage=3 if stage == 3 else None)

    # The exported inference model: the student only, whole, equal to the last checkpoint's student.
    export = out / "mcd-model"
    model = AutoModel.from_pretrained(export)
    assert type(model) is MCDModel
    exported = load_file(export / "model.safetensors")
    assert not any(key.startswith(("teacher", "mlm_head")) for key in exported)
    checkpoints = [load_file(out / f"checkpoint-{step}" / "model.safetensors") for step in range(1, NUM_STEPS + 1)]
    last = checkpoints[-1]
    assert {f"mcd.{key}" for key in exported} <= set(last)
    for key, value in exported.items():
        torch.testing.assert_close(value, last[f"mcd.{key}"], rtol=0, atol=0, msg=key)

    # The teacher followed the EMA of the student after every step, every parameter of it.
    logs = _step_logs(state)
    teacher_keys = sorted(key for key in last if key.startswith("teacher_"))
    student_key = {key: key.replace("teacher_", "mcd.", 1) for key in teacher_keys}
    assert len(teacher_keys) > 10 and all(value in last for value in student_key.values())
    for step in range(2, NUM_STEPS + 1):
        momentum = momentum_at(step - 1, NUM_STEPS, BASE_MOMENTUM)
        assert logs[step]["momentum"] == pytest.approx(momentum)
        before, after = checkpoints[step - 2], checkpoints[step - 1]
        for key in teacher_keys:
            expected = momentum * before[key] + (1 - momentum) * after[student_key[key]]
            torch.testing.assert_close(after[key], expected, rtol=1e-5, atol=1e-6, msg=f"{key} after step {step}")
    moved = [key for key in teacher_keys if not torch.equal(checkpoints[0][key], last[key])]
    assert moved == teacher_keys  # none stayed at its step-1 value
    assert any(not torch.equal(last[key], last[student_key[key]]) for key in teacher_keys)  # it lags the student

    # Same job on 1 process, from the same initial weights: every step's loss terms close.
    reference_logs = _step_logs(reference)
    for step in range(1, NUM_STEPS + 1):
        for name in ("loss", "contrastive_loss", "mlm_loss"):
            assert float(logs[step][name]) == pytest.approx(float(reference_logs[step][name]), rel=0.05), (step, name)
        assert logs[step]["logit_scale"] == pytest.approx(reference_logs[step]["logit_scale"], rel=1e-5)
