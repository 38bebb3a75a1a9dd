# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""MCDTrainer: transformers' `Trainer` computing the MCD objective.

The Trainer subclass decides WHAT is computed (`compute_loss`: views on the device, the student and
teacher forward, the named loss terms); callbacks decide WHEN (`TeacherEMACallback` after every
optimizer step). α and m are functions of `state.global_step` only, and the views' randomness is
seeded from (seed, global_step) for the whole global batch, so a resumed run continues exactly and a sample
gets the same views however many processes share the batch.

Gradient accumulation is refused: the contrastive terms take their negatives from one forward pass,
so accumulating k micro-batches of B is NOT the objective at batch kB (a micro-batch sees B − 1 negatives
instead of kB − 1, and MP-NCE/log-ratio terms are not additive over micro-batches). Scale the global
batch with more processes (the loss is exact across processes) or a larger per-device batch with
gradient checkpointing.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import has_length
from transformers.utils import is_sagemaker_mp_enabled, logging

from .arguments import MCDTrainingArguments
from .augmentation import MCDViews
from .data import BAD_SAMPLE_REASONS, BadSampleCounter, KeyedSamples, SeededCollator
from .evaluation.tasks import RetrievalTask, ZeroShotTask, run_tasks
from .losses import progressive_alpha
from .pretraining import MCDForPreTraining
from .seeding import derive_seed
from .teacher import momentum_at

logger = logging.get_logger(__name__)

def _unwrap(model: torch.nn.Module) -> MCDForPreTraining:
    while not isinstance(model, MCDForPreTraining) and hasattr(model, "module"):
        model = model.module
    if not isinstance(model, MCDForPreTraining):
        raise TypeError(f"MCDTrainer trains an MCDForPreTraining, got {type(model).__name__}")
    return model


class TeacherEMACallback(TrainerCallback):
    """After every optimizer step: θ̄ ← m·θ̄ + (1 − m)·θ with m = m(step) (docs/method.md §5).

    `state.global_step` has just been incremented when `on_step_end` fires, so the update after the
    k-th optimizer step (k = 1..T) uses m(k − 1): the first update uses m₀ and the schedule reaches 1
    only after training. Depends on nothing but the step, so a resumed run continues the same schedule.
    """

    def __init__(self, base_momentum: float):
        self.base_momentum = base_momentum
        self.last_momentum: float | None = None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        momentum = momentum_at(state.global_step - 1, max(state.max_steps, 1), self.base_momentum)
        _unwrap(model).update_teacher(momentum)
        self.last_momentum = momentum


class MCDTrainer(Trainer):
    r"""
    `Trainer` for [`MCDForPreTraining`].

    Batches hold `pixel_values` as uint8 `(B, 3, H, W)` images at a base size (the collator's output),
    `input_ids`, `attention_mask` (and `token_type_ids`), and for MLM `mlm_input_ids`/`mlm_labels`; an
    optional `bad_samples` dict of skipped-sample counts is accumulated and logged. Both views are made
    on the training device by `views` (default: [`MCDViews`] built from the arguments and the model's
    image size).

    Args:
        model (`MCDForPreTraining`)
        args (`MCDTrainingArguments`)
        views (`MCDViews`, *optional*)
        image_mean, image_std (`Sequence[float]`, *optional*): normalisation of the views (the image
            processor's; default 0.5).
        kwargs: everything else `Trainer` takes (datasets, collator, callbacks, ...).
    """

    def __init__(
        self,
        model: MCDForPreTraining,
        args: MCDTrainingArguments,
        views: MCDViews | None = None,
        image_mean=(0.5, 0.5, 0.5),
        image_std=(0.5, 0.5, 0.5),
        eval_tasks: Sequence[ZeroShotTask | RetrievalTask] = (),
        eval_preprocess: Callable | None = None,
        **kwargs,
    ):
        if not isinstance(args, MCDTrainingArguments):
            raise TypeError("MCDTrainer needs MCDTrainingArguments (the MCD objective's options live there)")
        model.loss_fn = args.build_loss()
        if model.teacher_text != args.teacher_text:
            raise ValueError(
                f"--teacher_text={args.teacher_text!r} but the model was built with teacher_text={model.teacher_text!r}"
            )
        self.views = views or MCDViews(
            image_size=model.config.vision_config.image_size,
            image_mean=image_mean,
            image_std=image_std,
            orig_scale=tuple(args.orig_crop_scale),
            aug_scale=tuple(args.aug_crop_scale),
        )
        if eval_tasks and eval_preprocess is None:
            raise ValueError("eval_tasks need eval_preprocess (a list of images -> pixel_values)")
        self.eval_tasks, self.eval_preprocess = list(eval_tasks), eval_preprocess
        self.ema_callback = TeacherEMACallback(args.base_momentum)
        callbacks = list(kwargs.pop("callbacks", None) or []) + [self.ema_callback]
        super().__init__(model=model, args=args, callbacks=callbacks, **kwargs)
        # Our compute_loss already returns the exact global-batch loss: the Trainer must not rescale it
        # by a token count or the number of processes.
        self.model_accepts_loss_kwargs = False
        self._term_sums: dict[str, float] = defaultdict(float)
        self._term_steps = 0
        self._bad_samples = BadSampleCounter()
        self._samples_since_log = 0
        self._last_log_time = time.perf_counter()

    # ------------------------------------------------------------------------------ data and resume
    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        """The Trainer's dataloader; for map-style data each batch's MLM mask is seeded by its samples
        (`SeededCollator`), so a resumed run sees exactly the masks of the uninterrupted one."""
        dataset, collator = self.train_dataset, self.data_collator
        if dataset is None or isinstance(dataset, torch.utils.data.IterableDataset) or not has_length(dataset):
            return super().get_train_dataloader()
        self.train_dataset, self.data_collator = KeyedSamples(dataset), SeededCollator(collator, self.args.seed)
        try:
            return super().get_train_dataloader()
        finally:
            self.train_dataset, self.data_collator = dataset, collator

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        # transformers' Trainer restores weights with a raw `load_state_dict`, but `save_pretrained` writes the
        # towers' keys in their original hub format (ViT: `encoder.layer.0.attention.attention.query` for the
        # module's `layers.0.attention.q_proj`), so the raw load silently leaves those weights, student AND
        # teacher, at their initial values (huggingface/transformers#43701). `from_pretrained` converts the
        # keys; its weights are copied in place because the optimizer holds these very parameters.
        if self.is_fsdp_enabled or is_sagemaker_mp_enabled():
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        target = _unwrap(model if model is not None else self.model)
        loaded = type(target).from_pretrained(resume_from_checkpoint, teacher_text=target.teacher_text)
        target.load_state_dict(loaded.state_dict(), strict=True)

    # ----------------------------------------------------------------------------------------- loss
    def current_alpha(self) -> float:
        """α of the current step (docs/method.md §2); `constant` keeps the augmented InfoNCE at full weight."""
        return progressive_alpha(self.state.global_step, max(self.state.max_steps, 1), self.args.aug_nce_schedule)

    def _view_seed(self, training: bool) -> int:
        # One reproducible stream per (run seed, step), shared by every process: each draws the parameters of the
        # whole global batch and takes its own rows (`MCDViews`). Evaluation uses a fixed one (step key 0).
        step_key = self.state.global_step + 1 if training else 0
        return derive_seed(self.args.seed, step_key)

    def compute_loss(self, model, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch=None):
        inputs = dict(inputs)
        bad = inputs.pop("bad_samples", None)
        images = inputs.pop("pixel_values")  # (B, 3, H, W) uint8 at the base size
        training = model.training
        if bad and training:
            self._bad_samples.update(bad)
        rows = images.shape[0]  # equal on every process: the local rows of the global batch
        views = self.views(
            images,
            seed=self._view_seed(training),
            row_offset=self.args.process_index * rows,
            total_rows=self.args.world_size * rows,
        )
        alpha = self.current_alpha()
        outputs = model(
            pixel_values=views.pixel_values,
            aug_pixel_values=views.aug_pixel_values,
            input_ids=inputs["input_ids"],
            attention_mask=inputs.get("attention_mask"),
            token_type_ids=inputs.get("token_type_ids"),
            mlm_input_ids=inputs.get("mlm_input_ids"),
            mlm_labels=inputs.get("mlm_labels"),
            alpha=alpha,
        )
        if training:
            for name, value in outputs.losses.items():
                if name != "loss":
                    self._term_sums[name] += value.detach().float().item()
            self._term_sums["alpha"] += alpha
            self._term_sums["logit_scale"] += outputs.logit_scale.float().item()
            self._term_steps += 1
            self._samples_since_log += images.shape[0] * self.args.world_size
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        # The validation loss of the objective; there are no logits/labels to return.
        with torch.no_grad():
            loss = self.compute_loss(model, self._prepare_inputs(inputs))
        return loss.detach(), None, None

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """The objective's loss on the evaluation split (when there is one), plus every evaluation task
        (zero-shot, retrieval) run on the student, all logged together.

        Every process runs the tasks on the same data (under ZeRO-3 the forward passes are collective); they
        all get the same metrics.
        """
        metrics: dict[str, float] = {}
        if eval_dataset is not None or self.eval_dataset is not None:
            metrics.update(super().evaluate(eval_dataset, ignore_keys, metric_key_prefix))
        if self.eval_tasks:
            student = _unwrap(self.model).export_student()
            tokenizer = self.processing_class
            task_metrics = run_tasks(self.eval_tasks, student, tokenizer, self.eval_preprocess)
            prefixed = {f"{metric_key_prefix}_{name}": value for name, value in task_metrics.items()}
            self.log(prefixed)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, prefixed)
            metrics.update(prefixed)
        return metrics

    # -------------------------------------------------------------------------------------- logging
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._term_steps:
            # Every term is already a global-batch value on each rank (mlm: its exact share), so the mean
            # over processes is the global value.
            names = sorted(self._term_sums)
            local = torch.tensor([self._term_sums[n] / self._term_steps for n in names], device=self.args.device)
            averaged = self.accelerator.reduce(local, reduction="mean") if self.args.world_size > 1 else local
            logs.update({name: round(value, 6) for name, value in zip(names, averaged.tolist())})
            if self.ema_callback.last_momentum is not None:
                logs["momentum"] = self.ema_callback.last_momentum
            elapsed = time.perf_counter() - self._last_log_time
            if elapsed > 0:
                logs["samples_per_second"] = round(self._samples_since_log / elapsed, 3)
            skipped = self.total_bad_sample_counts()
            logs.update({f"skipped_{reason}": count for reason, count in skipped.items() if count})
            self._term_sums.clear()
            self._term_steps = 0
            self._samples_since_log = 0
            self._last_log_time = time.perf_counter()
        super().log(logs, start_time)

    def total_bad_sample_counts(self) -> dict[str, int]:
        """Skipped samples so far, by reason, summed over all processes (a collective: call on every rank)."""
        local = torch.tensor([self._bad_samples.counts[r] for r in BAD_SAMPLE_REASONS], device=self.args.device)
        total = self.accelerator.reduce(local, reduction="sum") if self.args.world_size > 1 else local
        return dict(zip(BAD_SAMPLE_REASONS, (int(v) for v in total.tolist())))


__all__ = ["MCDTrainer", "TeacherEMACallback"]
