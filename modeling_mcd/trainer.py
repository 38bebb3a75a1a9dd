# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""MCDTrainer: transformers' `Trainer` computing the MCD objective.

The Trainer subclass decides WHAT is computed (`compute_loss`: views on the device, the student and
teacher forward, the named loss terms); callbacks decide WHEN (`TeacherEMACallback` after every
optimizer step). α and m are functions of `state.global_step` only, and the views' randomness is
seeded from (seed, global_step, process), so a resumed run continues exactly.

Gradient accumulation is refused: the contrastive terms take their negatives from one forward pass,
so accumulating k micro-batches of B is NOT the objective at batch kB (a micro-batch sees B − 1 negatives
instead of kB − 1, and MP-NCE/log-ratio terms are not additive over micro-batches). Scale the global
batch with more processes (the loss is exact across processes) or a larger per-device batch with
gradient checkpointing.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import has_length
from transformers.utils import is_sagemaker_mp_enabled, logging

from .augmentation import MCDViews
from .data import BAD_SAMPLE_REASONS, BadSampleCounter
from .evaluation.tasks import RetrievalTask, ZeroShotTask, run_tasks
from .losses import OBJECTIVES, MCDLoss, progressive_alpha
from .pretraining import TEACHER_TEXT_CHOICES, MCDForPreTraining
from .teacher import momentum_at

logger = logging.get_logger(__name__)

AUG_NCE_SCHEDULES = ("cosine", "constant")
DISTILL_LOSSES = ("l2", "l1", "smooth_l1")


@dataclass
class MCDTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus every option of the MCD objective (SPEC §1–§6)."""

    objective: str = field(default="mcd", metadata={"help": f"Training objective, one of {OBJECTIVES} (SPEC §2)."})
    lambda_dist: float = field(default=1.0, metadata={"help": "λ: weight of the distillation loss (SPEC §6)."})
    lambda_pos: float = field(default=1.0, metadata={"help": "λ_pos: weight of L_pos inside L_dist (SPEC §3)."})
    lambda_neg: float = field(default=1.0, metadata={"help": "λ_neg: weight of L_neg inside L_dist (SPEC §3)."})
    lambda_noisy: float = field(default=1.0, metadata={"help": "λ_noisy: weight of L_noisy inside L_dist (SPEC §3)."})
    beta_mlm: float = field(default=1.0, metadata={"help": "β: weight of the MLM loss (SPEC §6)."})
    distill_pos: bool = field(default=True, metadata={"help": "Use L_pos (paper Eq. 7; Tab. 5 row c)."})
    distill_neg: bool = field(default=True, metadata={"help": "Use L_neg (paper Eq. 8; Tab. 5 row d)."})
    distill_noisy: bool = field(default=True, metadata={"help": "Use L_noisy (paper Eq. 9; Tab. 5 row e)."})
    use_mlm: bool = field(default=True, metadata={"help": "Add the MLM loss on a masked copy of the caption (SPEC §4)."})
    distill_loss: str = field(default="l2", metadata={"help": f"Log-ratio regression, one of {DISTILL_LOSSES}."})
    distill_eps: float = field(default=1e-6, metadata={"help": "ε added to distances in the log-ratio loss."})
    aug_nce_schedule: str = field(
        default="cosine",
        metadata={"help": f"Weight 1 − α of the augmented-view InfoNCE terms, one of {AUG_NCE_SCHEDULES} (SPEC §2)."},
    )
    base_momentum: float = field(default=0.996, metadata={"help": "m₀ of the teacher's cosine momentum (SPEC §5)."})
    teacher_text: str = field(
        default="stopgrad",
        metadata={"help": f"Teacher-side text embedding v̄, one of {TEACHER_TEXT_CHOICES} (SPEC §Notation)."},
    )
    orig_crop_scale: list[float] = field(
        default_factory=lambda: [0.5, 1.0], metadata={"help": "RandomResizedCrop scale of the original view (SPEC §1)."}
    )
    aug_crop_scale: list[float] = field(
        default_factory=lambda: [0.08, 1.0], metadata={"help": "RandomResizedCrop scale of the augmented view."}
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: MCD batches carry fields the model's forward does not name."}
    )

    def __post_init__(self):
        super().__post_init__()
        choices = {
            "objective": OBJECTIVES,
            "distill_loss": DISTILL_LOSSES,
            "aug_nce_schedule": AUG_NCE_SCHEDULES,
            "teacher_text": TEACHER_TEXT_CHOICES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not 0.0 <= self.base_momentum <= 1.0:
            raise ValueError(f"--base_momentum must be in [0, 1], got {self.base_momentum}")
        if self.gradient_accumulation_steps != 1:
            raise ValueError(
                "--gradient_accumulation_steps must be 1 for MCD: accumulated micro-batches would each contrast "
                "against their own negatives only, which is not the objective at the larger batch. Use more "
                "processes (the loss is exact across processes) or a larger per-device batch."
            )

    def build_loss(self) -> MCDLoss:
        """The `MCDLoss` these arguments describe."""
        return MCDLoss(
            objective=self.objective,
            lambda_dist=self.lambda_dist,
            lambda_pos=self.lambda_pos,
            lambda_neg=self.lambda_neg,
            lambda_noisy=self.lambda_noisy,
            beta_mlm=self.beta_mlm,
            distill_loss=self.distill_loss,
            eps=self.distill_eps,
            use_pos=self.distill_pos,
            use_neg=self.distill_neg,
            use_noisy=self.distill_noisy,
            use_mlm=self.use_mlm,
        )


def _unwrap(model: torch.nn.Module) -> MCDForPreTraining:
    while not isinstance(model, MCDForPreTraining) and hasattr(model, "module"):
        model = model.module
    if not isinstance(model, MCDForPreTraining):
        raise TypeError(f"MCDTrainer trains an MCDForPreTraining, got {type(model).__name__}")
    return model


# Sample field carrying (epoch, index) from `_KeyedSamples` to `_SeededCollator`; never reaches the model.
_SAMPLE_KEY = "_mcd_sample_key"


class _KeyedSamples(torch.utils.data.Dataset):
    """A map-style dataset whose samples also carry `(epoch, index)`: the key that seeds their batch's MLM mask."""

    def __init__(self, dataset: torch.utils.data.Dataset):
        self.dataset = dataset
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        # Called by accelerate's dataloader before each epoch; the wrapped dataset may seed captions with it too.
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.dataset[index]
        if not isinstance(sample, Mapping):
            raise TypeError(f"MCDTrainer expects dict samples, got a {type(sample).__name__} at index {index}")
        return {**sample, _SAMPLE_KEY: (self.epoch, int(index))}


class _SeededCollator:
    """Runs a collator with torch's CPU RNG seeded from (run seed, the batch's sample keys), then restored.

    The MLM mask of a batch then depends only on which samples it holds, not on how many batches the
    process (or DataLoader worker) collated before: a resumed run collates only the batches after the
    checkpoint, DataLoader prefetching runs ahead of the optimizer step, and workers hold their own RNG,
    so with torch's global stream the masks after a resume would differ from the uninterrupted run's.
    """

    def __init__(self, collator: Callable, seed: int):
        self.collator = collator
        self.seed = seed
        mlm = getattr(collator, "mlm_collator", None)
        if getattr(mlm, "seed", None) is not None:
            logger.warning(
                "The collator's MLM masking has its own seeded generator: its masks are reproducible in a fresh "
                "run but NOT after resuming from a checkpoint. Leave its `seed` unset; MCDTrainer seeds each batch."
            )

    def __call__(self, examples):
        keys = [example[_SAMPLE_KEY] for example in examples]
        examples = [{k: v for k, v in example.items() if k != _SAMPLE_KEY} for example in examples]
        seed = int(np.random.SeedSequence([self.seed, *(part for key in keys for part in key)]).generate_state(1)[0])
        with torch.random.fork_rng(devices=[]):
            # Seed the CPU generator only (torch.manual_seed would also reseed every accelerator).
            torch.random.default_generator.manual_seed(seed)
            return self.collator(examples)


class TeacherEMACallback(TrainerCallback):
    """After every optimizer step: θ̄ ← m·θ̄ + (1 − m)·θ with m = m(step) (SPEC §5).

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
        (`_SeededCollator`), so a resumed run sees exactly the masks of the uninterrupted one."""
        dataset, collator = self.train_dataset, self.data_collator
        if dataset is None or isinstance(dataset, torch.utils.data.IterableDataset) or not has_length(dataset):
            return super().get_train_dataloader()
        self.train_dataset, self.data_collator = _KeyedSamples(dataset), _SeededCollator(collator, self.args.seed)
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
        """α of the current step (SPEC §2); `constant` keeps the augmented InfoNCE at full weight."""
        return progressive_alpha(self.state.global_step, max(self.state.max_steps, 1), self.args.aug_nce_schedule)

    def _view_seed(self, training: bool) -> int:
        # A distinct, reproducible stream per (run seed, step, process); evaluation uses a fixed one.
        step = self.state.global_step if training else -1
        return (self.args.seed * 1_000_003 + (step + 1) * 9_176 + self.args.process_index * 7_919) % (2**31)

    def compute_loss(self, model, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch=None):
        inputs = dict(inputs)
        bad = inputs.pop("bad_samples", None)
        images = inputs.pop("pixel_values")  # (B, 3, H, W) uint8 at the base size
        training = model.training
        if bad and training:
            self._bad_samples.update(bad)
        views = self.views(images, seed=self._view_seed(training))
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


__all__ = ["MCDTrainer", "MCDTrainingArguments", "TeacherEMACallback"]
