# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Every option of a training run, as the dataclasses `HfArgumentParser` reads, and the YAML recipe reader.

- `ModelArguments`: which towers (pretrained, or their size from scratch), pooling, projection;
- `DataArguments`: where the pairs come from, how they are batched, what is evaluated;
- `MCDTrainingArguments`: every `TrainingArguments` field plus every option of the MCD objective
  (docs/method.md §1–§6).

`parse_run_args(argv, default_recipe)` reads an optional YAML file (its keys are the flags) followed by flags
that override it. Every choice-valued option takes its choices from the module that implements it, so a
flag cannot offer a value the code does not know.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from transformers import HfArgumentParser, TrainingArguments

from .configuration_mcd import POOLING_CHOICES
from .data.decoding import DEFAULT_MAX_PIXELS, ON_BAD_SAMPLE_CHOICES
from .losses import AUG_NCE_SCHEDULES, DISTILL_LOSSES
from .objective import OBJECTIVES, MCDLoss
from .pretraining import TEACHER_TEXT_CHOICES

#: `--dataset synthetic`: the built-in scenes (`modeling_mcd.synthetic`), no download.
SYNTHETIC = "synthetic"


@dataclass
class ModelArguments:
    """Which towers, and how big when trained from scratch."""

    vision_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Pretrained ViT-like image tower (hub id or folder); default: from scratch."}
    )
    text_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Pretrained BERT-like text tower (hub id or folder); default: from scratch."}
    )
    tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Tokenizer to use; default: the text tower's, or a WordPiece vocab trained on the captions."},
    )
    tokenizer_vocab_size: int = field(default=1000, metadata={"help": "Vocab size of a tokenizer trained here."})
    projection_dim: int = field(default=512, metadata={"help": "Dimension of the shared embedding space."})
    vision_pooling: str = field(
        default="pooler", metadata={"help": "Image pooling (docs/method.md §7).", "choices": POOLING_CHOICES}
    )
    text_pooling: str = field(
        default="pooler", metadata={"help": "Text pooling (docs/method.md §7).", "choices": POOLING_CHOICES}
    )
    image_size: int = field(default=224, metadata={"help": "Image side of a from-scratch ViT."})
    patch_size: int = field(default=32, metadata={"help": "Patch size of a from-scratch ViT."})
    vision_hidden_size: int = field(default=768, metadata={"help": "Width of a from-scratch ViT."})
    vision_layers: int = field(default=12, metadata={"help": "Depth of a from-scratch ViT."})
    vision_heads: int = field(default=12, metadata={"help": "Attention heads of a from-scratch ViT."})
    text_hidden_size: int = field(default=768, metadata={"help": "Width of a from-scratch BERT."})
    text_layers: int = field(default=12, metadata={"help": "Depth of a from-scratch BERT."})
    text_heads: int = field(default=12, metadata={"help": "Attention heads of a from-scratch BERT."})
    gradient_checkpointing_vision: bool = field(default=False, metadata={"help": "Checkpoint the image tower."})
    gradient_checkpointing_text: bool = field(default=False, metadata={"help": "Checkpoint the text tower."})

    def __post_init__(self):
        _positive(self, "tokenizer_vocab_size", "projection_dim")
        if self.vision_model_name_or_path or self.text_model_name_or_path:
            return  # the towers' sizes come from their configs
        _positive(self, "image_size", "patch_size", "vision_hidden_size", "vision_layers", "vision_heads")
        _positive(self, "text_hidden_size", "text_layers", "text_heads")
        _divides(self, "patch_size", "image_size", "a ViT cuts the image into whole patches")
        _divides(self, "vision_heads", "vision_hidden_size", "each attention head gets an equal share of the width")
        _divides(self, "text_heads", "text_hidden_size", "each attention head gets an equal share of the width")


@dataclass
class DataArguments:
    """Where the image-text pairs come from, and how they are batched."""

    dataset: str = field(
        default=SYNTHETIC,
        metadata={
            "help": "'synthetic' (built in, no download), a Hub dataset name, an imagefolder directory, "
            "jsonl/csv files or webdataset .tar shards (globs and {a,b} lists allowed)."
        },
    )
    train_split: str = field(default="train", metadata={"help": "Split used for training."})
    validation_split: str | None = field(
        default=None,
        metadata={"help": "Split whose objective loss is evaluated with --eval_strategy (synthetic: 'validation')."},
    )
    image_column: str = field(default="image", metadata={"help": "Column holding the image (or its path)."})
    caption_column: str = field(default="caption", metadata={"help": "Column holding the caption(s)."})
    streaming: bool = field(default=False, metadata={"help": "Stream the dataset (for data larger than the disk)."})
    base_image_size: int | None = field(
        default=None, metadata={"help": "Side of the uint8 images the collator makes; default: 8/7 of the model's."}
    )
    max_seq_length: int = field(default=32, metadata={"help": "Captions are truncated to this many tokens."})
    mlm_probability: float = field(default=0.15, metadata={"help": "Share of caption tokens masked for MLM."})
    on_bad_sample: str = field(
        default="skip",
        metadata={
            "help": "skip: count and log a bad sample; raise: stop, naming the row.",
            "choices": ON_BAD_SAMPLE_CHOICES,
        },
    )
    max_image_pixels: int = field(
        default=DEFAULT_MAX_PIXELS, metadata={"help": "Larger images count as decompression bombs."}
    )
    synthetic_num_train: int = field(default=8000, metadata={"help": "Training scenes of the synthetic dataset."})
    synthetic_num_test: int = field(default=1000, metadata={"help": "Test scenes of the synthetic dataset."})
    synthetic_image_size: int = field(default=64, metadata={"help": "Side of the synthetic scenes."})
    eval_synthetic: bool = field(
        default=True, metadata={"help": "Evaluate zero-shot and retrieval on the synthetic test split."}
    )
    eval_zero_shot_folder: str | None = field(
        default=None, metadata={"help": "An image folder <class>/... (+ classnames.json) for zero-shot evaluation."}
    )
    eval_zero_shot_templates: str | None = field(
        default=None, metadata={"help": "Prompt set for --eval_zero_shot_folder (e.g. cifar10); default: generic."}
    )
    eval_retrieval_file: str | None = field(
        default=None, metadata={"help": "A captions.jsonl (file_name, captions, split) for retrieval evaluation."}
    )
    eval_max_samples: int | None = field(default=None, metadata={"help": "Cap each evaluation set (quick runs)."})

    def __post_init__(self):
        _positive(self, "max_seq_length", "max_image_pixels", "synthetic_num_train", "synthetic_num_test")
        _positive(self, "synthetic_image_size", "base_image_size", "eval_max_samples", optional=True)
        if self.max_seq_length < 2:
            raise ValueError(
                f"--max_seq_length must be at least 2 (room for [CLS] and [SEP]), got {self.max_seq_length}"
            )
        if not 0.0 <= self.mlm_probability < 1.0:
            raise ValueError(f"--mlm_probability must be in [0, 1), got {self.mlm_probability}")

    def describe(self) -> str:
        """One line about the training data, for the model card."""
        if self.dataset == SYNTHETIC:
            return f"the built-in synthetic scenes ({self.synthetic_num_train} training images, generated)"
        return f"`{self.dataset}` (split `{self.train_split}`)"


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

    def __post_init__(self):
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
        _positive(self, "per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps")
        _positive(self, "learning_rate", "distill_eps", "logging_steps", "max_nonfinite_steps")
        _non_negative(self, "weight_decay", "warmup_steps", "lambda_dist", "lambda_pos", "lambda_neg", "lambda_noisy")
        _non_negative(self, "beta_mlm")
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
        if self.teacher_text == "ema" and self.objective != "mcd":
            raise ValueError(
                f"--teacher_text ema is a teacher for the distillation terms of --objective mcd, not {self.objective}"
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


def _positive(args, *names: str, optional: bool = False) -> None:
    """Raise `ValueError` naming the flag unless each field is > 0 (`None` allowed when `optional`)."""
    for name in names:
        value = getattr(args, name)
        if value is None and optional:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"--{name} must be a positive number, got {value!r}")


def _non_negative(args, *names: str) -> None:
    for name in names:
        value = getattr(args, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"--{name} must be a number >= 0, got {value!r}")


def _divides(args, divisor: str, dividend: str, why: str) -> None:
    if getattr(args, dividend) % getattr(args, divisor):
        raise ValueError(
            f"--{dividend} {getattr(args, dividend)} is not a multiple of --{divisor} {getattr(args, divisor)}: {why}"
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


def parse_run_args(
    argv: list[str] | None = None, default_recipe: str | Path | None = None
) -> tuple[ModelArguments, DataArguments, MCDTrainingArguments]:
    r"""
    Read a run: an optional YAML recipe (its keys are the flags) followed by flags that override it.

    Args:
        argv (`list[str]`, *optional*): the command line without the program; defaults to `sys.argv[1:]`.
        default_recipe (`str` or `Path`, *optional*): the recipe that flags override when `argv` does not
            start with a `.yaml`/`.yml` file.

    Returns:
        `(ModelArguments, DataArguments, MCDTrainingArguments)`
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not (argv and argv[0].endswith((".yaml", ".yml"))) and default_recipe is not None:
        argv = [str(default_recipe)] + argv
    if argv and argv[0].endswith((".yaml", ".yml")):
        with open(argv[0]) as handle:
            recipe = yaml.safe_load(handle) or {}
        argv = yaml_to_flags(recipe) + argv[1:]
    parser = HfArgumentParser((ModelArguments, DataArguments, MCDTrainingArguments))
    return parser.parse_args_into_dataclasses(args=argv)


def yaml_to_flags(recipe: dict) -> list[str]:
    """`{"max_steps": 5, "orig_crop_scale": [0.5, 1]}` -> `["--max_steps", "5", "--orig_crop_scale", "0.5", "1"]`."""
    flags: list[str] = []
    for key, value in recipe.items():
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        flags += [f"--{key}", *(str(v) for v in values)]
    return flags


__all__ = [
    "SYNTHETIC",
    "DataArguments",
    "MCDTrainingArguments",
    "ModelArguments",
    "parse_run_args",
    "yaml_to_flags",
]
