"""training/run_mcd.py against hostile inputs: a user error is one `run_mcd.py: error:` line with exit code 2 (a bug
keeps its traceback), every check that can run before training does, a run that cannot take a step fails naming
why, an evaluation failure never costs the trained model, a checkpoint that does not fit is named in one line, and a
full disk is said so."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from test_run_mcd import ROOT, SCRIPT, TINY_RUN, _load_script

from modeling_mcd.trainer.checkpoints import STAGING_DIR, last_checkpoint
from modeling_mcd.trainer.mcd_trainer import MCDTrainer
from modeling_mcd.trainer.recipe import parse_run_args
from modeling_mcd.trainer.training_arguments import MCDTrainingArguments

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white"]
SHAPES = ["circle", "square", "triangle", "star", "cross"]


def write_pairs(folder: Path, rows: int, same_image: bool = False, words: tuple[str, ...] = ()) -> str:
    """A caption file of `rows` pairs with small distinct images (or one image for all, `same_image`); `words` are
    added to every caption. Returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(rows):
        name = "same.png" if same_image else f"{i}.png"
        if not (folder / name).exists():
            Image.new("RGB", (12, 10), ((37 * i) % 256, (91 * i + 40) % 256, (53 * i + 90) % 256)).save(folder / name)
        caption = " ".join(["a", COLOURS[i % len(COLOURS)], SHAPES[i % len(SHAPES)], *words])
        lines.append(json.dumps({"image": name, "caption": caption}))
    path = folder / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def data_run(out: Path, dataset: str, *flags: str) -> list[str]:
    """The tiny run on a caption file, without the synthetic evaluation."""
    return [*TINY_RUN, "--output_dir", str(out), "--dataset", dataset, "--eval_synthetic", "false", *flags]


def run_script(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=environment, cwd=ROOT, timeout=300
    )


# ----------------------------------------------------------------------------- one line for a user error
def test_an_argument_error_is_one_line_and_exit_code_2(tmp_path):
    result = run_script("--per_device_train_batch_size", "-4", "--output_dir", str(tmp_path / "o"))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last == "run_mcd.py: error: --per_device_train_batch_size must be a positive number, got -4"


def test_mcd_debug_keeps_the_traceback_of_a_user_error(tmp_path, monkeypatch, capsys):
    run_mcd = _load_script()
    monkeypatch.setenv("MCD_DEBUG", "1")
    code = run_mcd.cli_main(["--per_device_train_batch_size", "-4", "--output_dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1].startswith("run_mcd.py: error: --per_device_train_batch_size")


def test_a_bug_keeps_its_traceback_and_exit_code_1(tmp_path, monkeypatch, capsys):
    """Not raised by the package's own checks: a ValueError from elsewhere is a bug, shown whole."""
    run_mcd = _load_script()
    monkeypatch.setattr(run_mcd, "load_pairs", lambda *args, **kwargs: int("not a number"))
    code = run_mcd.cli_main([*TINY_RUN, "--output_dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback (most recent call last)" in err and "invalid literal for int()" in err
    assert "run_mcd.py: error:" not in err


def test_exit_status_follows_one_rule():
    """UsageError and ValueErrors raised by the package's own code: 2; a failed evaluation after the save: 3; a
    preemption: 128 + the signal; a full disk: 2; anything else: a bug (None)."""
    from modeling_mcd.data.leakage import LeakError
    from modeling_mcd.trainer.errors import EvaluationError, Preempted, UsageError, exit_status

    def raised(error: BaseException) -> BaseException:
        try:
            raise error
        except BaseException as caught:  # noqa: BLE001 - the traceback is what exit_status reads
            return caught

    assert exit_status(raised(UsageError("x")))[0] == 2
    assert exit_status(raised(LeakError("x")))[0] == 2  # raised here, but a deliberate data check wherever raised
    assert exit_status(raised(ValueError("x"))) is None  # raised by a test, not by the package
    with pytest.raises(ValueError) as parsed:  # raised in the package's argument checks
        parse_run_args(["--max_steps", "0", "--num_train_epochs", "0", "--do_train", "true", "--output_dir", "o"])
    code, message = exit_status(parsed.value)
    assert code == 2 and message.startswith("no step to take")
    assert exit_status(raised(EvaluationError("evaluation failed")))[0] == 3
    assert exit_status(raised(Preempted(15, 7, "out/checkpoint-7")))[0] == 143
    code, message = exit_status(raised(OSError(errno.ENOSPC, "No space left on device", "out/x")))
    assert code == 2 and "no space left on device" in message
    assert exit_status(raised(ZeroDivisionError())) is None


# ------------------------------------------------------------------------------------- parse-time checks
def test_a_global_batch_of_one_pair_is_refused_when_parsed():
    with pytest.raises(ValueError, match=r"global batch of 1 pair .*--per_device_train_batch_size 1"):
        parse_run_args(["--per_device_train_batch_size", "1", "--do_train", "true", "--output_dir", "o"])
    # two micro-batches of one pair make one contrastive batch of two
    flags = ["--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "2", "--do_train", "true"]
    _, _, args = parse_run_args([*flags, "--output_dir", "o"])
    assert args.per_device_train_batch_size == 1


def test_bf16_with_fp16_is_refused_naming_both_flags():
    with pytest.raises(ValueError, match=r"--bf16 and --fp16"):
        MCDTrainingArguments(output_dir="o", bf16=True, fp16=True, use_cpu=True)


def test_a_locked_text_tower_with_mlm_is_refused_when_parsed():
    flags = ["--lock_text_tower", "true", "--text_model_name_or_path", "some/bert", "--output_dir", "o"]
    with pytest.raises(ValueError, match=r"--lock_text_tower needs --use_mlm false"):
        parse_run_args(flags)
    _, _, args = parse_run_args([*flags, "--use_mlm", "false"])
    assert not args.use_mlm


def test_a_last_batch_of_one_pair_is_refused_before_training(tmp_path):
    run_mcd = _load_script()
    out = tmp_path / "run"
    dataset = write_pairs(tmp_path / "data", 7)
    with pytest.raises(ValueError, match=r"7 usable training rows .* last batch of 1 pair"):
        run_mcd.main(data_run(out, dataset, "--dataloader_drop_last", "false"))
    assert not (out / "trainer_state.json").exists() and not (out / "mcd-model").exists()


def test_max_seq_length_beyond_the_text_positions_is_refused_before_training(tmp_path):
    run_mcd = _load_script()
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"--max_seq_length 600 .* max_position_embeddings 512"):
        run_mcd.main([*TINY_RUN, "--output_dir", str(out), "--max_seq_length", "600"])
    assert not (out / "trainer_state.json").exists() and not (out / "mcd-model").exists()


# --------------------------------------------------------------------------------------- no step taken
def test_fewer_rows_than_one_batch_is_refused_before_training(tmp_path):
    run_mcd = _load_script()
    out = tmp_path / "run"
    dataset = write_pairs(tmp_path / "data", 5)
    flags = ["--per_device_train_batch_size", "8", "--dataloader_drop_last", "true"]
    with pytest.raises(ValueError, match=r"5 usable training rows .* no batch of 8 pairs"):
        run_mcd.main(data_run(out, dataset, *flags))
    assert not (out / "mcd-model").exists()


def test_a_run_that_takes_no_step_fails_and_exports_nothing(tmp_path, monkeypatch):
    """Whatever the data (a stream's length is not known before training): a run that ends without an optimizer step
    fails, naming why, and exports nothing. Here the check before training is taken away to reach the end."""
    run_mcd = _load_script()
    monkeypatch.setattr(run_mcd, "check_batches", lambda rows, args: None, raising=False)
    out = tmp_path / "run"
    dataset = write_pairs(tmp_path / "data", 5)
    flags = ["--per_device_train_batch_size", "8", "--dataloader_drop_last", "true"]
    with pytest.raises(ValueError, match=r"took no optimizer step .* no batch of 8 pairs"):
        run_mcd.main(data_run(out, dataset, *flags))
    assert not (out / "mcd-model").exists()


# ------------------------------------------------------------------------------- evaluation after the save
def test_a_failed_final_evaluation_keeps_the_trained_model(tmp_path, monkeypatch):
    """An evaluation image that became unreadable while the run trained: the final evaluation fails, the trained
    model is saved all the same, with its processor and a card (without metrics), and the error names both."""
    run_mcd = _load_script()

    def unreadable(*args, **kwargs):
        raise ValueError("cannot read image /data/eval/missing.png: missing_file: no such file")

    monkeypatch.setattr(run_mcd, "run_tasks", unreadable)
    out = tmp_path / "run"
    with pytest.raises(Exception, match=r"missing\.png") as failure:
        run_mcd.main([*TINY_RUN, "--output_dir", str(out), "--eval_max_samples", "6"])
    export = out / "mcd-model"
    assert (export / "model.safetensors").is_file() and (export / "tokenizer.json").is_file()
    assert "steps: 3" in (export / "README.md").read_text()  # the card is written ...
    assert not (out / "eval_results.json").exists()  # ... without metrics, as there are none
    assert str(export) in str(failure.value)


# --------------------------------------------------------------------------------- checkpoints that do not fit
def _checkpointed(run_mcd, out: Path, *flags: str) -> None:
    """A 2-step run of the tiny config that leaves out/checkpoint-2."""
    args = [*TINY_RUN, "--output_dir", str(out), "--eval_synthetic", "false", *flags]
    args[args.index("--save_strategy") + 1] = "steps"
    run_mcd.main([*args, "--save_steps", "2", "--max_steps", "2"])
    assert (out / "checkpoint-2").is_dir()


def test_resuming_with_another_model_size_names_the_folder_and_the_size(tmp_path):
    run_mcd = _load_script()
    out = tmp_path / "run"
    _checkpointed(run_mcd, out)
    args = [*TINY_RUN, "--output_dir", str(out), "--eval_synthetic", "false", "--max_steps", "4"]
    with pytest.raises(ValueError, match=rf"{out / 'checkpoint-2'}.*vision hidden_size 24 there, 32 here"):
        run_mcd.main([*args, "--vision_hidden_size", "32"])


def test_a_missing_checkpoint_folder_is_named(tmp_path):
    run_mcd = _load_script()
    missing = tmp_path / "nowhere" / "checkpoint-9"
    args = [*TINY_RUN, "--output_dir", str(tmp_path / "run"), "--resume_from_checkpoint", str(missing)]
    with pytest.raises(ValueError, match=rf"--resume_from_checkpoint {missing}: no such folder"):
        run_mcd.main(args)


def test_a_truncated_checkpoint_is_named(tmp_path):
    run_mcd = _load_script()
    out = tmp_path / "run"
    _checkpointed(run_mcd, out)
    weights = out / "checkpoint-2" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    args = [*TINY_RUN, "--output_dir", str(out), "--eval_synthetic", "false", "--max_steps", "4"]
    with pytest.raises(ValueError, match=rf"{weights}.* truncated or corrupt"):
        run_mcd.main(args)


def test_a_full_disk_while_saving_says_so_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    run_mcd = _load_script()
    out = tmp_path / "run"
    save = MCDTrainer._save_optimizer_and_scheduler

    def full_disk(self, output_dir):
        if self.state.global_step == 4:
            raise OSError(errno.ENOSPC, "No space left on device", os.path.join(output_dir, "optimizer.pt"))
        return save(self, output_dir)

    monkeypatch.setattr(MCDTrainer, "_save_optimizer_and_scheduler", full_disk)
    args = [*TINY_RUN, "--output_dir", str(out), "--eval_synthetic", "false", "--max_steps", "6"]
    args[args.index("--save_strategy") + 1] = "steps"
    with pytest.raises(OSError, match=r"disk full while writing checkpoint-4 .* checkpoint-2 is the last complete"):
        run_mcd.main([*args, "--save_steps", "2"])
    assert last_checkpoint(str(out)) == str(out / "checkpoint-2")
    assert not os.listdir(out / STAGING_DIR)  # the half-written checkpoint is removed, freeing its space


# ------------------------------------------------------------------------------ batches of a single image
def test_steps_whose_batch_shows_one_image_are_warned_about_once_and_counted(tmp_path, caplog):
    run_mcd = _load_script()
    out = tmp_path / "run"
    dataset = write_pairs(tmp_path / "data", 12, same_image=True)
    caplog.set_level(logging.WARNING)
    run_mcd.main(data_run(out, dataset, "--dataloader_drop_last", "true"))
    warnings = [
        r.getMessage() for r in caplog.records if "every row of the global batch shows one image" in r.getMessage()
    ]
    assert len(warnings) == 1 and warnings[0].startswith("step 1:")
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert [entry["single_image_steps"] for entry in history if "loss" in entry] == [1, 2, 3]
    assert any("3 of 3 optimizer steps had a batch showing one image" in r.getMessage() for r in caplog.records)
