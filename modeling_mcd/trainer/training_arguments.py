# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""`MCDTrainingArguments`: every `TrainingArguments` field plus every option of the MCD objective
(docs/method.md §1–§6), validated when built, and the process setup a CPU-only DeepSpeed run needs.

The validation helpers here raise `ValueError` naming the flag; `modeling_mcd.trainer.arguments` uses them for the model
and data arguments too.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from ..objective.losses import AUG_NCE_SCHEDULES, DISTILL_LOSSES
from ..objective.mcd_loss import OBJECTIVES, MCDLoss
from ..pretraining.model import TEACHER_TEXT_CHOICES
from .flag_checks import non_negative, positive


@dataclass
class MCDTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus every option of the MCD objective (docs/method.md §1–§6)."""

    objective: str = field(
        default="mcd", metadata={"help": "Training objective (docs/method.md §2).", "choices": OBJECTIVES}
    )
    lambda_dist: float = field(
        default=1.0, metadata={"help": "λ: weight of the distillation loss (docs/method.md §6)."}
    )
    lambda_pos: float = field(
        default=1.0, metadata={"help": "λ_pos: weight of L_pos inside L_dist (docs/method.md §3)."}
    )
    lambda_neg: float = field(
        default=1.0, metadata={"help": "λ_neg: weight of L_neg inside L_dist (docs/method.md §3)."}
    )
    lambda_noisy: float = field(
        default=1.0, metadata={"help": "λ_noisy: weight of L_noisy inside L_dist (docs/method.md §3)."}
    )
    beta_mlm: float = field(default=1.0, metadata={"help": "β: weight of the MLM loss (docs/method.md §6)."})
    distill_pos: bool = field(default=True, metadata={"help": "Use L_pos (paper Eq. 7; Tab. 5 row c)."})
    distill_neg: bool = field(default=True, metadata={"help": "Use L_neg (paper Eq. 8; Tab. 5 row d)."})
    distill_noisy: bool = field(default=True, metadata={"help": "Use L_noisy (paper Eq. 9; Tab. 5 row e)."})
    use_mlm: bool = field(
        default=True, metadata={"help": "Add the MLM loss on a masked copy of the caption (docs/method.md §4)."}
    )
    distill_loss: str = field(
        default="l2", metadata={"help": "Log-ratio regression (docs/method.md §3).", "choices": DISTILL_LOSSES}
    )
    distill_eps: float = field(default=1e-6, metadata={"help": "ε added to distances in the log-ratio loss."})
    aug_nce_schedule: str = field(
        default="cosine",
        metadata={
            "help": "Weight 1 − α of the augmented-view InfoNCE terms (docs/method.md §2).",
            "choices": AUG_NCE_SCHEDULES,
        },
    )
    local_loss: bool = field(
        default=False,
        metadata={
            "help": "Each process computes only the loss rows of its own samples against the whole global batch "
            "(open_clip's --local-loss): the same loss and gradients, W times smaller logit and distance matrices "
            "(docs/method.md §9)."
        },
    )
    base_momentum: float = field(
        default=0.996, metadata={"help": "m₀ of the teacher's cosine momentum (docs/method.md §5)."}
    )
    teacher_text: str = field(
        default="stopgrad",
        metadata={"help": "Teacher-side text embedding v̄ (docs/method.md §Notation).", "choices": TEACHER_TEXT_CHOICES},
    )
    orig_crop_scale: list[float] = field(
        default_factory=lambda: [0.5, 1.0],
        metadata={"help": "RandomResizedCrop scale of the original view (docs/method.md §1)."},
    )
    aug_crop_scale: list[float] = field(
        default_factory=lambda: [0.08, 1.0], metadata={"help": "RandomResizedCrop scale of the augmented view."}
    )
    max_nonfinite_steps: int = field(
        default=10,
        metadata={
            "help": "Optimizer steps with a non-finite loss or gradient are skipped; this many in a row stop the run."
        },
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: MCD batches carry fields the model's forward does not name."}
    )
    resume_weights_only: bool = field(
        default=False,
        metadata={
            "help": "Resume a checkpoint that lacks its optimizer, scheduler or RNG state: its weights and step, with "
            "a fresh optimizer and the learning-rate schedule continued from that step. Without it such a checkpoint "
            "is refused."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start afresh in --output_dir: delete its checkpoints and its vocabulary (tokenizer/) before "
            "training, instead of resuming them."
        },
    )

    def __post_init__(self):
        if self.bf16 and self.fp16:  # before transformers' checks, whose message names neither flag
            raise ValueError("--bf16 and --fp16 are exclusive: choose one mixed precision (or neither)")
        uses_deepspeed = self.deepspeed or os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"
        if uses_deepspeed and not _has_accelerator():
            _prepare_cpu_deepspeed(self)
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
        positive(self, "per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps")
        positive(self, "learning_rate", "distill_eps", "logging_steps", "max_nonfinite_steps")
        non_negative(self, "weight_decay", "warmup_steps", "lambda_dist", "lambda_pos", "lambda_neg", "lambda_noisy")
        non_negative(self, "beta_mlm")
        self._check_global_batch()
        for name in ("orig_crop_scale", "aug_crop_scale"):
            low, high = (list(getattr(self, name)) + [None, None])[:2]
            if len(getattr(self, name)) != 2 or not 0.0 < low <= high <= 1.0:
                raise ValueError(f"--{name} takes two area fractions 0 < low <= high <= 1, got {getattr(self, name)}")
        if self.do_train and self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise ValueError(
                f"no step to take: --max_steps {self.max_steps} and --num_train_epochs {self.num_train_epochs}; "
                "give a positive --max_steps or --num_train_epochs (or --do_train false to only evaluate)"
            )
        if self.objective == "mcd" and not (self.distill_pos or self.distill_neg or self.distill_noisy):
            raise ValueError(
                "--objective mcd with --distill_pos, --distill_neg and --distill_noisy all false has no distillation "
                "term, and so no use for a teacher: use --objective mpnce"
            )
        if self.overwrite_output_dir and not self.do_train:
            raise ValueError("--overwrite_output_dir deletes the checkpoints that --do_train false would evaluate")
        if self.overwrite_output_dir and self.resume_from_checkpoint:
            raise ValueError("--overwrite_output_dir starts afresh, --resume_from_checkpoint resumes: give one of them")
        if self.teacher_text == "ema" and self.objective != "mcd":
            raise ValueError(
                f"--teacher_text ema is a teacher for the distillation terms of --objective mcd, not {self.objective}"
            )

    def _check_global_batch(self) -> None:
        # One contrastive batch is a step's micro-batches on every process (`modeling_mcd.trainer.accumulation`); with a
        # single pair there is no negative, every contrastive and distillation term is 0.
        per_step = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if per_step < 2 and self.do_train and per_step * self.world_size < 2:
            raise ValueError(
                f"a global batch of 1 pair (--per_device_train_batch_size {self.per_device_train_batch_size} x "
                f"--gradient_accumulation_steps {self.gradient_accumulation_steps} x {self.world_size} process) has "
                "nothing to contrast: its contrastive and distillation losses are 0. Give at least 2 pairs per step"
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
            local_loss=self.local_loss,
        )


def _has_accelerator() -> bool:
    return torch.accelerator.is_available()


def _prepare_cpu_deepspeed(args: TrainingArguments) -> None:
    """A DeepSpeed run on a machine without an accelerator (tests, CI, a laptop), launched by `torchrun` or
    `accelerate launch`: the process group runs on gloo, and DeepSpeed skips its shared-memory all-reduce kernel.

    transformers starts DeepSpeed without naming a backend, and DeepSpeed's CPU accelerator then sets up a process
    group that accelerate does not count: every process believes it is alone (world size 1) and DeepSpeed refuses
    the batch sizes. So the state is set up here first, with gloo, and the arguments use it
    (`accelerator_config.use_configured_state`). The shm kernel would be JIT-compiled (minutes of C++) only to speed
    up collectives that gloo does anyway.
    """
    try:
        import deepspeed.ops
    except ImportError:
        return  # TrainingArguments says what is missing
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    if int(os.environ.get("LOCAL_RANK", -1)) == -1:
        return  # not launched as one of several processes: nothing to set up
    from accelerate import PartialState

    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"  # what `accelerate launch --use_deepspeed` sets
    PartialState(backend=args.ddp_backend or "gloo")
    config = args.accelerator_config
    if config is None:
        config = {}
    elif isinstance(config, str):
        with open(config) as handle:
            config = json.load(handle)
    elif not isinstance(config, dict):
        config = config.to_dict()
    args.accelerator_config = {**config, "use_configured_state": True}
    # transformers accepts bf16 without a GPU only on the CPU device; the configured state keeps DeepSpeed.
    args.use_cpu = True


__all__ = ["MCDTrainingArguments"]
