# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""modeling_mcd.trainer.nonfinite: a step with a NaN gradient is skipped (no weight, no teacher, no schedule moves),
counted and logged; too many in a row stop the run with an error that says where to resume from."""

from __future__ import annotations

import math

import pytest
import torch
from test_trainer import ParameterRecorder, _args, _step_logs, _trainer
from transformers import TrainerCallback


class NaNGradientAt(TrainerCallback):
    """Makes backward put a NaN into one gradient in each step of `steps` (1-based), as a real overflow would: before
    the Trainer takes the gradient norm that the guard reads."""

    def __init__(self, *steps: int):
        self.steps, self.active, self.hooked = set(steps), False, False

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self.active = state.global_step + 1 in self.steps
        if not self.hooked:
            param = next(p for p in model.parameters() if p.requires_grad)
            param.register_hook(
                lambda grad: (
                    grad.clone().view(-1).index_fill_(0, torch.tensor(0), math.nan).view_as(grad)
                    if self.active
                    else grad
                )
            )
            self.hooked = True


def test_a_nan_step_is_skipped_counted_and_logged(tmp_path, caplog):
    recorder = ParameterRecorder()
    trainer = _trainer(_args(tmp_path, max_steps=4), callbacks=[NaNGradientAt(2), recorder])
    trainer.train()
    (teacher_1, student_1), (teacher_2, student_2) = recorder.snapshots[1], recorder.snapshots[2]
    for before, after in zip(student_1 + teacher_1, student_2 + teacher_2):
        assert torch.equal(before, after)  # step 2 moved nothing
    teacher_3, student_3 = recorder.snapshots[3]
    assert not torch.equal(student_2[0], student_3[0]) and not torch.equal(teacher_2[0], teacher_3[0])
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert trainer.nonfinite_guard.skipped_steps == [2]
    logs = _step_logs(trainer)
    assert [entry.get("nonfinite_steps", 0) for entry in logs] == [0, 1, 1, 1]
    # The schedule did not advance on the skipped step: step 3 runs at step 2's learning rate.
    assert logs[2]["learning_rate"] == logs[1]["learning_rate"] != logs[0]["learning_rate"]
    assert any("step 2: non-finite" in record.getMessage() for record in caplog.records)
    assert all(math.isfinite(entry["loss"]) for entry in logs if entry["step"] != 2)


def test_too_many_nan_steps_in_a_row_stop_the_run(tmp_path):
    trainer = _trainer(_args(tmp_path, max_steps=6, max_nonfinite_steps=2), callbacks=[NaNGradientAt(3, 4, 5)])
    with pytest.raises(RuntimeError, match=r"2 optimizer steps in a row \(steps 3 to 4\).*weights are those of step 2"):
        trainer.train()
    assert trainer.state.global_step == 4
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_the_guard_reads_the_trainers_gradient_norm_and_takes_no_norms_of_its_own(tmp_path, monkeypatch):
    from modeling_mcd.trainer import nonfinite

    def no_second_pass(optimizer):
        raise AssertionError("the guard took gradient norms of its own")

    monkeypatch.setattr(nonfinite, "_all_finite", no_second_pass)
    trainer = _trainer(_args(tmp_path, max_steps=3), callbacks=[NaNGradientAt(2)])
    trainer.train()
    assert trainer.nonfinite_guard.skipped_steps == [2]
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
