"""What a run resumes from is checked before it trains: a checkpoint of another objective gets a teacher that
starts from its student, a checkpoint without its optimizer, scheduler or RNG state is refused (unless
`--resume_weights_only`), another run's checkpoints and vocabulary are not taken for this run's, and a finished
run is not silently run again."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from test_run_errors import _checkpointed, data_run, write_pairs
from test_run_mcd import TINY_RUN, _load_script
from transformers import AutoTokenizer, TrainerCallback


def _args(out, *flags: str) -> list[str]:
    return [*TINY_RUN, "--output_dir", str(out), "--eval_synthetic", "false", *flags]


def _logged(entries: list[dict], key: str) -> dict[int, float]:
    return {entry["step"]: entry[key] for entry in entries if key in entry}


def test_resuming_a_clip_checkpoint_with_mcd_starts_the_teacher_from_the_student(tmp_path, monkeypatch, caplog):
    run_mcd = _load_script()
    out = tmp_path / "run"
    _checkpointed(run_mcd, out, "--objective", "clip")
    seen = {}

    class TeacherAtStart(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            teacher, student = model.teacher_student_parameters()
            seen["teacher_is_student"] = all(torch.equal(t, s) for t, s in zip(teacher, student))

    class RecordingTrainer(run_mcd.MCDTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(TeacherAtStart())  # last: sees the model as training starts

    monkeypatch.setattr(run_mcd, "MCDTrainer", RecordingTrainer)
    caplog.set_level(logging.WARNING)
    run_mcd.main(_args(out, "--objective", "mcd", "--max_steps", "4"))
    assert seen["teacher_is_student"]
    assert any(
        "objective clip" in r.getMessage() and "teacher starts from the student" in r.getMessage()
        for r in caplog.records
    )


def test_a_checkpoint_without_its_optimizer_is_refused_unless_weights_only(tmp_path):
    run_mcd = _load_script()
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    flags = ["--save_strategy", "steps", "--save_steps", "2", "--save_total_limit", "3", "--max_steps", "4"]
    flags += ["--learning_rate", "1e-3"]
    run_mcd.main(_args(whole, *flags))
    cut.mkdir()
    shutil.copytree(whole / "checkpoint-2", cut / "checkpoint-2")
    shutil.copytree(whole / "tokenizer", cut / "tokenizer")
    for name in ("optimizer.pt", "scheduler.pt"):
        (cut / "checkpoint-2" / name).unlink()
    with pytest.raises(ValueError, match=r"checkpoint-2 lacks optimizer\.pt, scheduler\.pt.*--resume_weights_only"):
        run_mcd.main(_args(cut, *flags))
    run_mcd.main(_args(cut, *flags, "--resume_weights_only", "true"))
    expected = _logged(
        json.loads((whole / "checkpoint-4" / "trainer_state.json").read_text())["log_history"], "learning_rate"
    )
    actual = _logged(
        json.loads((cut / "checkpoint-4" / "trainer_state.json").read_text())["log_history"], "learning_rate"
    )
    assert actual[3] == expected[3] and actual[4] == expected[4]  # the schedule went on from step 2, not from 0


def test_new_data_in_a_finished_runs_folder_is_refused_and_overwrite_starts_afresh(tmp_path):
    run_mcd = _load_script()
    out = tmp_path / "run"
    _checkpointed(run_mcd, out)  # synthetic scenes, 2 steps
    dataset = write_pairs(tmp_path / "data", 12)
    with pytest.raises(ValueError, match=r"checkpoint-2 was trained on other data.*--overwrite_output_dir true"):
        run_mcd.main(data_run(out, dataset, "--max_steps", "2"))
    run_mcd.main(data_run(out, dataset, "--max_steps", "2", "--overwrite_output_dir", "true"))
    assert not (out / "checkpoint-2").exists()  # the old run's checkpoints went; this run saves none
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in history if "loss" in entry] == [1, 2]  # trained afresh
    assert dataset in (out / "mcd-model" / "README.md").read_text()


def test_relaunching_a_finished_run_fails_naming_its_checkpoint(tmp_path):
    run_mcd = _load_script()
    out = tmp_path / "run"
    _checkpointed(run_mcd, out)
    with pytest.raises(ValueError, match=r"checkpoint-2 already reached --max_steps 2"):
        run_mcd.main(_args(out, "--max_steps", "2"))


def test_another_runs_vocabulary_is_rebuilt_for_new_data(tmp_path, caplog):
    run_mcd = _load_script()
    out = tmp_path / "run"
    run_mcd.main(_args(out, "--max_steps", "1"))  # leaves output_dir/tokenizer, and no checkpoint
    dataset = write_pairs(tmp_path / "data", 12, words=("zebra", "giraffe"))
    caplog.set_level(logging.WARNING)
    run_mcd.main(data_run(out, dataset, "--max_steps", "1", "--tokenizer_vocab_size", "100"))
    vocabulary = AutoTokenizer.from_pretrained(out / "tokenizer").get_vocab()
    assert "zebra" in vocabulary and "giraffe" in vocabulary
    assert any("rebuilding the vocabulary" in r.getMessage() for r in caplog.records)
