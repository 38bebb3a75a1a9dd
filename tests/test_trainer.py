"""MCDTrainer: real optimizer steps of the tiny model, every logged term, the α/m schedules, the exact EMA
update, reproducible views and MLM masks, argument validation, and exact resume from a checkpoint."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from conftest import tiny_config, tiny_tokenizer
from PIL import Image
from transformers import TrainerCallback, TrainingArguments

from modeling_mcd.data import ImageTextDataset, MCDCollator
from modeling_mcd.data.augmentation import MCDViews
from modeling_mcd.objective.losses import progressive_alpha
from modeling_mcd.pretraining.model import MCDForPreTraining
from modeling_mcd.pretraining.teacher import momentum_at
from modeling_mcd.trainer.mcd_trainer import MCDTrainer
from modeling_mcd.trainer.training_arguments import MCDTrainingArguments

BASE_SIZE = 36  # the collator's base image size; the views crop/resize it to the model's 30
BATCH = 5
ROWS = 20  # 4 steps per epoch
BAD_ROW = 7  # an image that cannot be read: skipped by the dataset, counted by the trainer
STEPS = 10
CAPTIONS = ["a photo of a red circle", "two blue squares", "a cat", "a dog on the left", "big green star", "a plane"]
TERMS = ("contrastive_loss", "distill_pos_loss", "distill_neg_loss", "distill_noisy_loss", "distill_loss", "mlm_loss")


def _dataset(rows: int = ROWS, bad_rows: tuple[int, ...] = ()) -> ImageTextDataset:
    rng = np.random.default_rng(0)
    samples = [
        {
            # Each caption goes with its own colour, so the pairs are learnable.
            "image": Image.fromarray(
                np.clip(
                    rng.integers(0, 60, (BASE_SIZE, BASE_SIZE, 3)) + 40 * np.eye(3, dtype=np.int64)[i % 3] * (i % 6),
                    0,
                    255,
                ).astype(np.uint8)
            ),
            "caption": CAPTIONS[i % len(CAPTIONS)],
        }
        for i in range(rows)
    ]
    for row in bad_rows:
        samples[row]["image"] = None
    return ImageTextDataset(samples, image_size=BASE_SIZE)


def _collator() -> MCDCollator:
    return MCDCollator(tiny_tokenizer(), mlm_probability=0.3)


def _args(output_dir, **overrides) -> MCDTrainingArguments:
    settings = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=BATCH,
        max_steps=STEPS,
        learning_rate=2e-3,
        warmup_steps=0,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        dataloader_drop_last=True,
        dataloader_num_workers=0,
        seed=3,
        disable_tqdm=True,
    )
    settings.update(overrides)
    return MCDTrainingArguments(**settings)


def _trainer(args: MCDTrainingArguments, dataset=None, **kwargs) -> MCDTrainer:
    torch.manual_seed(0)
    model = MCDForPreTraining(tiny_config(), teacher_text=args.teacher_text)
    return MCDTrainer(model=model, args=args, train_dataset=dataset or _dataset(), data_collator=_collator(), **kwargs)


def _step_logs(trainer: MCDTrainer) -> list[dict]:
    return [entry for entry in trainer.state.log_history if "loss" in entry]


class ParameterRecorder(TrainerCallback):
    """Teacher and student parameters at the start of every step (global_step g = steps done) and at the end."""

    def __init__(self):
        self.snapshots: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}

    def _record(self, state, model) -> None:
        teacher, student = model.teacher_student_parameters()
        copy = [p.detach().clone() for p in teacher], [p.detach().clone() for p in student]
        self.snapshots[state.global_step] = copy

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self._record(state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._record(state, model)


# ------------------------------------------------------------------------------------ one real run

BASE_MOMENTUM = 0.9  # far from 1, so that a wrong step in m(step) is visible in the teacher


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    recorder = ParameterRecorder()
    args = _args(tmp_path_factory.mktemp("run"), base_momentum=BASE_MOMENTUM)
    trainer = _trainer(args, dataset=_dataset(bad_rows=(BAD_ROW,)), callbacks=[recorder])
    trainer.train()
    return trainer, recorder


@pytest.mark.slow
def test_a_few_steps_lower_the_loss(trained):
    trainer, _ = trained
    losses = [entry["loss"] for entry in _step_logs(trainer)]
    assert len(losses) == STEPS and all(math.isfinite(loss) for loss in losses)
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.5, losses


@pytest.mark.slow
def test_every_term_is_logged_at_every_step(trained):
    trainer, _ = trained
    logs = _step_logs(trainer)
    for entry in logs:
        for name in (*TERMS, "alpha", "momentum", "logit_scale", "samples_per_second"):
            assert name in entry and math.isfinite(entry[name]), (name, entry)
        assert entry["samples_per_second"] > 0
        # The total is the sum of the logged terms (λ = β = 1 by default); terms are rounded to 1e-6 in the logs.
        expected = entry["contrastive_loss"] + entry["distill_loss"] + entry["mlm_loss"]
        assert entry["loss"] == pytest.approx(expected, abs=1e-4)
        parts = entry["distill_pos_loss"] + entry["distill_neg_loss"] + entry["distill_noisy_loss"]
        assert entry["distill_loss"] == pytest.approx(parts, abs=1e-5)
    # The first step's temperature is the initial one.
    assert logs[0]["logit_scale"] == pytest.approx(math.exp(trainer.model.config.logit_scale_init_value), rel=1e-5)


@pytest.mark.slow
def test_alpha_and_momentum_follow_the_schedules_of_the_global_step(trained):
    trainer, _ = trained
    logs = _step_logs(trainer)
    assert [entry["step"] for entry in logs] == list(range(1, STEPS + 1))
    for entry in logs:
        # The forward of optimizer step k (1..T) runs at global_step k - 1.
        assert entry["alpha"] == pytest.approx(progressive_alpha(entry["step"] - 1, STEPS), abs=1e-6)
        assert entry["momentum"] == momentum_at(entry["step"] - 1, STEPS, BASE_MOMENTUM)
    assert logs[0]["alpha"] == 0.0 and logs[-1]["alpha"] > 0.9


@pytest.mark.slow
def test_teacher_moves_by_exactly_the_scheduled_momentum(trained):
    _, recorder = trained
    assert sorted(recorder.snapshots) == list(range(STEPS + 1))
    for step in range(STEPS):
        teacher_old, _ = recorder.snapshots[step]
        teacher_new, student_new = recorder.snapshots[step + 1]
        m = momentum_at(step, STEPS, BASE_MOMENTUM)
        wrong_m = momentum_at(step + 1, STEPS, BASE_MOMENTUM)
        distinguishable = False
        for t_old, t_new, s_new in zip(teacher_old, teacher_new, student_new):
            expected = m * t_old.double() + (1 - m) * s_new.double()
            torch.testing.assert_close(t_new.double(), expected, rtol=1e-6, atol=1e-8)
            off_by_one = wrong_m * t_old.double() + (1 - wrong_m) * s_new.double()
            distinguishable |= not torch.allclose(t_new.double(), off_by_one, rtol=1e-6, atol=1e-8)
        assert distinguishable, f"step {step}: m({step}) and m({step + 1}) give the same teacher"


@pytest.mark.slow
def test_skipped_samples_are_counted_and_logged(trained):
    trainer, _ = trained
    epochs = STEPS * BATCH // ROWS  # every row (the bad one included) is requested once per full epoch
    assert trainer.total_bad_sample_counts()["missing_file"] == epochs
    assert _step_logs(trainer)[-1]["skipped_missing_file"] == epochs


# ------------------------------------------------------------------------------------ views and masks


class RecordingViews(MCDViews):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.outputs = []

    def forward(self, images, seed=None, **rows):
        out = super().forward(images, seed=seed, **rows)
        self.outputs.append(out)
        return out


def _views_at(trainer: MCDTrainer, batch: dict, step: int) -> torch.Tensor:
    trainer.state.global_step = step
    trainer.compute_loss(trainer.model, batch)
    out = trainer.views.outputs[-1]
    return torch.cat([out.pixel_values, out.aug_pixel_values])


def test_views_are_reproducible_per_seed_and_step_and_differ_across_steps(tmp_path):
    def trainer_with_seed(seed):
        size = tiny_config().vision_config.image_size
        views = RecordingViews(image_size=size, image_mean=[0.5] * 3, image_std=[0.5] * 3)
        return _trainer(_args(tmp_path, seed=seed), views=views)

    first, again, other_seed = trainer_with_seed(3), trainer_with_seed(3), trainer_with_seed(4)
    batch = _collator()([_dataset()[i] for i in range(BATCH)])
    at_3 = _views_at(first, batch, 3)
    torch.testing.assert_close(_views_at(again, batch, 3), at_3, rtol=0, atol=0)
    torch.testing.assert_close(_views_at(first, batch, 3), at_3, rtol=0, atol=0)
    assert not torch.allclose(_views_at(first, batch, 4), at_3)
    assert not torch.allclose(_views_at(other_seed, batch, 3), at_3)


def test_mlm_masks_depend_on_the_batch_not_on_the_rng_history(tmp_path):
    trainer = _trainer(_args(tmp_path))

    def epoch_masks():
        return [batch["mlm_input_ids"].clone() for batch in trainer.get_train_dataloader()]

    # The sampler's order follows torch's initial seed (Trainer sets it); keep it, vary only the RNG state.
    torch.manual_seed(3)
    masks = epoch_masks()
    torch.manual_seed(3)
    torch.rand(1000)  # a different RNG history (e.g. the dropout of the steps before a checkpoint) ...
    assert all(torch.equal(a, b) for a, b in zip(epoch_masks(), masks))  # ... gives the same masks
    assert len(masks) == ROWS // BATCH
    masked = [(m == tiny_tokenizer().mask_token_id).nonzero().tolist() for m in masks]
    assert len({str(positions) for positions in masked}) == len(masks)  # every batch has its own mask


# ------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("objective", "simclr"),
        ("distill_loss", "huber"),
        ("aug_nce_schedule", "linear"),
        ("teacher_text", "frozen"),
        ("base_momentum", 1.5),
    ],
)
def test_invalid_arguments_raise_naming_the_field(tmp_path, field, value):
    with pytest.raises(ValueError, match=field):
        _args(tmp_path, **{field: value})


def test_trainer_checks_its_arguments_and_model(tmp_path):
    torch.manual_seed(0)
    model = MCDForPreTraining(tiny_config())
    with pytest.raises(TypeError, match="MCDTrainingArguments"):
        MCDTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[]))
    with pytest.raises(ValueError, match="teacher_text"):
        MCDTrainer(model=model, args=_args(tmp_path, teacher_text="ema"))


# ------------------------------------------------------------------------------------ resume


def _state(trainer: MCDTrainer) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in trainer.model.state_dict().items()}


@pytest.mark.slow
@pytest.mark.parametrize("teacher_text", ["stopgrad", "ema"])
def test_resuming_from_a_checkpoint_continues_exactly(tmp_path, teacher_text):
    steps, save_at = 6, 3  # the checkpoint falls mid-epoch (4 steps per epoch); the run crosses an epoch
    common = dict(max_steps=steps, base_momentum=0.9, teacher_text=teacher_text, learning_rate=1e-3)
    # Uninterrupted (saving a checkpoint on the way changes nothing in the run itself).
    full = _trainer(_args(tmp_path, save_strategy="steps", save_steps=save_at, **common))
    full.train()
    checkpoint = os.path.join(tmp_path, f"checkpoint-{save_at}")
    assert os.path.isdir(checkpoint)

    # A NEW trainer and model, with different initial weights, resumed from the checkpoint.
    torch.manual_seed(99)
    recorder = ParameterRecorder()
    resumed = _trainer(_args(tmp_path, **common), callbacks=[recorder])
    with torch.no_grad():
        for param in resumed.model.parameters():
            param.add_(1.0)
    resumed.train(resume_from_checkpoint=checkpoint)

    expected, actual = _state(full), _state(resumed)
    teacher, student = full.model.teacher_student_parameters()
    assert not torch.allclose(teacher[0], student[0])  # the teacher lags the student: its equality means something
    assert set(actual) == set(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, rtol=1e-6, atol=1e-7, msg=name)
    assert sorted(recorder.snapshots) == list(range(save_at, steps + 1))  # it ran only the remaining steps
    # Its log history continues the checkpoint's: the losses of the resumed steps are the uninterrupted ones.
    full_losses = {entry["step"]: entry["loss"] for entry in _step_logs(full)}
    resumed_losses = {entry["step"]: entry["loss"] for entry in _step_logs(resumed)}
    assert sorted(resumed_losses) == sorted(full_losses) == list(range(1, steps + 1))
    for step, loss in resumed_losses.items():
        assert loss == pytest.approx(full_losses[step], rel=1e-6), step


def test_weight_decay_spares_the_temperature_biases_norms_and_embeddings(tmp_path):
    trainer = _trainer(_args(tmp_path, weight_decay=0.2))
    model = trainer.model
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    decayed = set(trainer.get_decay_parameter_names(model)) & trainable
    spared = trainable - decayed
    # A naive reference, by name: what open_clip and SLIP exclude, and the token/position embeddings.
    expected = {
        name
        for name, param in model.named_parameters()
        if param.requires_grad
        and (
            name.endswith(("bias", "logit_scale", "cls_token", "position_embeddings"))
            or "LayerNorm" in name
            or "layernorm" in name
            or name.endswith(("word_embeddings.weight", "token_type_embeddings.weight", "position_embeddings.weight"))
        )
    }
    assert spared == expected
    assert "mcd.logit_scale" in spared and "mcd.visual_projection.weight" in decayed
    assert "mcd.vision_model.embeddings.patch_embeddings.projection.weight" in decayed  # a dense layer, as in open_clip
    # The optimizer the Trainer builds uses exactly this split.
    optimizer = trainer.create_optimizer()
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {group["weight_decay"]: {names[id(p)] for p in group["params"]} for group in optimizer.param_groups}
    assert groups == {0.2: decayed, 0.0: spared}
    assert not any(name.startswith("teacher_") for group in groups.values() for name in group)


def test_skipped_optimizer_step_moves_neither_student_nor_teacher(tmp_path, monkeypatch):
    """fp16's gradient scaler skips a step whose gradients overflow, and accelerate reports it through the optimizer's
    `step_was_skipped` (its `_is_overflow`). A CPU has no fp16 scaler, so the skip is made at that boundary, exactly
    as accelerate's `AcceleratedOptimizer.step` makes it; on a GPU the real scaler sets the same flag."""
    from accelerate.optimizer import AcceleratedOptimizer

    step_it = AcceleratedOptimizer.step
    calls = []

    def step(self, closure=None):
        calls.append(1)
        if len(calls) == 2:  # the second optimizer step overflows: nothing is applied
            self._is_overflow = True
            return None
        self._is_overflow = False
        return step_it(self, closure)

    monkeypatch.setattr(AcceleratedOptimizer, "step", step)
    recorder = ParameterRecorder()
    trainer = _trainer(_args(tmp_path, max_steps=3), callbacks=[recorder])
    trainer.train()
    (teacher_1, student_1), (teacher_2, student_2) = recorder.snapshots[1], recorder.snapshots[2]
    for before, after in zip(student_1 + teacher_1, student_2 + teacher_2):
        assert torch.equal(before, after)  # step 2 was skipped: nothing moved
    teacher_3, _ = recorder.snapshots[3]
    assert not all(torch.equal(a, b) for a, b in zip(teacher_2, teacher_3))  # step 3 ran: the teacher moved again
    assert trainer.ema_callback.skipped_steps == 1


def test_cpu_bf16_run_keeps_an_fp32_teacher_on_the_exact_ema(tmp_path):
    """`--bf16` (autocast): the towers compute in bf16, the weights, the teacher and its EMA stay float32."""
    recorder = ParameterRecorder()
    trainer = _trainer(_args(tmp_path, bf16=True, max_steps=3, base_momentum=BASE_MOMENTUM), callbacks=[recorder])
    trainer.train()
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}
    for step in range(3):
        teacher_old, _ = recorder.snapshots[step]
        teacher_new, student_new = recorder.snapshots[step + 1]
        m = momentum_at(step, 3, BASE_MOMENTUM)
        for t_old, t_new, s_new in zip(teacher_old, teacher_new, student_new):
            torch.testing.assert_close(t_new, m * t_old + (1 - m) * s_new, rtol=1e-6, atol=1e-7)
    assert all(math.isfinite(entry["loss"]) for entry in _step_logs(trainer))
