"""training/run_mcd.py under DeepSpeed ZeRO-2 and ZeRO-3 on 2 CPU processes, launched exactly as the README writes it:
`accelerate launch --num_processes 2 --use_deepspeed --deepspeed_config_file training/deepspeed/zero2.json ...` and
`torchrun --nproc_per_node 2 training/run_mcd.py ... --deepspeed training/deepspeed/zero3.json` (on a machine without
an accelerator the run sets itself up on gloo: `modeling_mcd.trainer.arguments`).

Each 2-process run is checked against a 1-process run of the same tiny job:

- it exits 0, and the exported `mcd-model` folder loads with `AutoModel`, holds only the student (no teacher, no
  MLM head), and its weights are the student's of the last checkpoint (under ZeRO-3 they must be gathered from the
  shards first);
- the EMA teacher really moved: from the whole-model checkpoint saved after every step, the teacher of step k is
  `m·teacher(k−1) + (1 − m)·student(k)` for every parameter, including the small ones that ZeRO-3 keeps whole on
  every rank (`ds_persist`), with `m` the momentum the run logged;
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
from conftest import tiny_config, tiny_image_processor, tiny_tokenizer
from safetensors.torch import load_file
from test_run_mcd import ROOT, SCRIPT, TINY_RUN
from transformers import AutoModel, BertModel, ViTModel

from modeling_mcd import MCDModel
from modeling_mcd.pretraining.teacher import momentum_at

NUM_STEPS = 3
GLOBAL_BATCH = 12
BASE_MOMENTUM = 0.5  # m = 0.5, 0.625, 0.875 over 3 steps: the teacher visibly moves


def _flags(**overrides: str) -> list[str]:
    """`TINY_RUN` with some values replaced (`--use_cpu` dropped: accelerate turns DeepSpeed off on `cpu`)."""
    pairs = dict(zip(TINY_RUN[::2], TINY_RUN[1::2]))
    pairs.pop("--use_cpu")
    pairs.update({f"--{key}": value for key, value in overrides.items()})
    return [item for pair in pairs.items() for item in pair]


def _run(
    tmp_path: Path,
    name: str,
    nproc: int,
    stage: int | None,
    launcher: str = "torchrun",
    bf16: bool = False,
    extra: list[str] = (),
) -> tuple[Path, dict]:
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
        bf16=str(bf16).lower(),
    )
    # The commands the README documents, as written: no launcher of the test's own.
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    deepspeed_config = ROOT / "training" / "deepspeed" / f"zero{stage}.json"
    if stage is None:
        command = [*torchrun, str(SCRIPT), *flags, "--use_cpu", "true"]
    elif launcher == "accelerate":
        accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(nproc)]
        command = [
            *accelerate,
            "--use_deepspeed",
            "--deepspeed_config_file",
            str(deepspeed_config),
            str(SCRIPT),
            *flags,
        ]
    else:
        command = [*torchrun, str(SCRIPT), *flags, "--deepspeed", str(deepspeed_config)]
    command += list(extra)  # flags given twice: the last one wins
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    errors = "\n".join(line for line in result.stderr.splitlines() if "Error" in line and "elastic" not in line)
    assert result.returncode == 0, f"{name} failed:\n{errors[-4000:]}\n...\n{result.stderr[-3000:]}"
    state = json.loads((out / f"checkpoint-{NUM_STEPS}" / "trainer_state.json").read_text())
    return out, state


def _step_logs(state: dict) -> dict[int, dict]:
    return {entry["step"]: entry for entry in state["log_history"] if "loss" in entry}


def _check_export_and_teacher(out: Path, state: dict, bf16: bool = False) -> None:
    """The exported model is the last checkpoint's student, whole; the teacher is the EMA of the student after every
    step, every parameter of it, and stays float32 (even when the student trains in bf16)."""
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

    logs = _step_logs(state)
    teacher_keys = sorted(key for key in last if key.startswith("teacher_"))
    student_key = {key: key.replace("teacher_", "mcd.", 1) for key in teacher_keys}
    assert len(teacher_keys) > 10 and all(value in last for value in student_key.values())
    assert {last[key].dtype for key in teacher_keys} == {torch.float32}
    assert {last[key].dtype for key in student_key.values()} == {torch.bfloat16 if bf16 else torch.float32}
    for step in range(2, NUM_STEPS + 1):
        momentum = momentum_at(step - 1, NUM_STEPS, BASE_MOMENTUM)
        assert logs[step]["momentum"] == pytest.approx(momentum)
        before, after = checkpoints[step - 2], checkpoints[step - 1]
        for key in teacher_keys:
            # In fp32, from the student's weights as the step left them (bf16 when it trains in bf16): a bf16 teacher
            # would be off by its rounding, ~4e-3 of each value.
            expected = momentum * before[key] + (1 - momentum) * after[student_key[key]].float()
            torch.testing.assert_close(after[key], expected, rtol=1e-5, atol=1e-6, msg=f"{key} after step {step}")
    moved = [key for key in teacher_keys if not torch.equal(checkpoints[0][key], last[key])]
    if bf16:
        # A few small parameters (LayerNorm biases near 0) keep their bf16 value through 3 steps of a tiny learning
        # rate; the teacher rightly stays with them. The equation above holds for every key either way.
        assert len(moved) > 0.8 * len(teacher_keys)
    else:
        assert moved == teacher_keys  # none stayed at its step-1 value
    assert any(not torch.equal(last[key], last[student_key[key]].float()) for key in teacher_keys)  # it lags


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("stage", [2, 3])
def test_teacher_stays_fp32_when_deepspeed_trains_in_bf16(tmp_path, stage):
    out, state = _run(tmp_path, f"zero{stage}-bf16", nproc=2, stage=stage, bf16=True)
    _check_export_and_teacher(out, state, bf16=True)


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("stage", [2, 3])
def test_two_process_deepspeed_run(tmp_path, stage):
    launcher = "accelerate" if stage == 2 else "torchrun"
    out, state = _run(tmp_path, f"zero{stage}-2proc", nproc=2, stage=stage, launcher=launcher)
    _, reference = _run(tmp_path, "reference-1proc", nproc=1, stage=3 if stage == 3 else None)
    _check_export_and_teacher(out, state)

    # Same job on 1 process, from the same initial weights: every step's loss terms close.
    logs, reference_logs = _step_logs(state), _step_logs(reference)
    for step in range(1, NUM_STEPS + 1):
        for name in ("loss", "contrastive_loss", "mlm_loss"):
            assert float(logs[step][name]) == pytest.approx(float(reference_logs[step][name]), rel=0.05), (step, name)
        assert logs[step]["logit_scale"] == pytest.approx(reference_logs[step]["logit_scale"], rel=1e-5)


@pytest.mark.slow
@pytest.mark.distributed
def test_pretrained_towers_under_zero3_train_and_export_their_weights(tmp_path):
    """`--vision_model_name_or_path` / `--text_model_name_or_path` under ZeRO-3: the towers are loaded into the
    partitioned model, and (at a learning rate of 1e-12: one AdamW step moves a weight by about that) the exported
    student holds the pretrained weights."""
    config = tiny_config()
    torch.manual_seed(0)
    vision, text = ViTModel(config.vision_config), BertModel(config.text_config)
    vision.save_pretrained(tmp_path / "vit")
    tiny_image_processor().save_pretrained(tmp_path / "vit")
    text.save_pretrained(tmp_path / "bert")
    tiny_tokenizer().save_pretrained(tmp_path / "bert")
    out, _ = _run(
        tmp_path,
        "zero3-pretrained",
        nproc=2,
        stage=3,
        extra=[
            "--vision_model_name_or_path", str(tmp_path / "vit"),
            "--text_model_name_or_path", str(tmp_path / "bert"),
            "--tokenizer_name_or_path", str(tmp_path / "bert"),
            "--learning_rate", "1e-12",
        ],
    )  # fmt: skip
    exported = AutoModel.from_pretrained(out / "mcd-model")
    for tower, reference in ((exported.vision_model, vision), (exported.text_model, text)):
        expected = reference.state_dict()
        for name, value in tower.state_dict().items():
            torch.testing.assert_close(value, expected[name], rtol=0, atol=1e-9, msg=name)
