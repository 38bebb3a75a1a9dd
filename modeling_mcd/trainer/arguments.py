# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Every model and data option of a training run, as the dataclasses `HfArgumentParser` reads.

- `ModelArguments`: which towers (pretrained, or their size from scratch), pooling, projection;
- `DataArguments`: where the pairs come from, how they are batched, what is evaluated;
- `MCDTrainingArguments` (in `modeling_mcd.trainer.training_arguments`): every `TrainingArguments` field plus every
  option of the MCD objective (docs/method.md §1–§6).

`modeling_mcd.trainer.recipe.parse_run_args` reads all three from a YAML recipe and flags. Every choice-valued option
takes its choices from the module that implements it, so a flag cannot offer a value the code does not know.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..configuration_mcd import POOLING_CHOICES
from ..data.decoding import DEFAULT_MAX_PIXELS, ON_BAD_SAMPLE_CHOICES
from ..data.streaming import DEFAULT_SHUFFLE_BUFFER_SIZE
from ..data.text_files import PATHS_RELATIVE_TO, csv_separator
from ..synthetic import SYNTHETIC
from .flag_checks import divides, positive
from .peft_configs import ALL_LINEAR, DEFAULT_TARGET_MODULES, LORA_TOWERS



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
    lock_text_tower: bool = field(
        default=False,
        metadata={
            "help": "LiT: the text tower (pretrained, --text_model_name_or_path) gets no gradient and its features are "
            "computed once per caption; its projection trains. Needs --use_mlm false."
        },
    )
    text_features_cache: str | None = field(
        default=None,
        metadata={
            "help": "With --lock_text_tower: a folder where the locked tower's caption features are kept between runs "
            "(one file per tower, named by a hash of its weights), read at the start and written after training."
        },
    )
    init_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Start from a pretrained dual encoder: a saved MCDModel, CLIPModel or VisionTextDualEncoderModel "
            "(folder or hub id; the last two converted on load). Its towers, projections, pooling, temperature, "
            "tokenizer and image normalisation replace the tower and size flags."
        },
    )
    lora_r: int = field(
        default=0, metadata={"help": "LoRA rank: adapters on --lora_target_modules of --lora_towers (0: no LoRA)."}
    )
    lora_alpha: int = field(default=16, metadata={"help": "LoRA α: the update is (α / r)·BA."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA branch's input."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: list(DEFAULT_TARGET_MODULES),
        metadata={
            "help": "Last names of the linear layers that get adapters (space- or comma-separated), or "
            f"'{ALL_LINEAR}'; the default is the attention query and value projections of ViT, CLIP and BERT."
        },
    )
    lora_towers: list[str] = field(
        default_factory=lambda: list(LORA_TOWERS),
        metadata={"help": f"Towers that get adapters, among {tuple(LORA_TOWERS)} (space- or comma-separated)."},
    )
    lora_train_projections: bool = field(
        default=False, metadata={"help": "Also train the projections of the adapted towers (peft modules_to_save)."}
    )
    peft_config: str | None = field(
        default=None,
        metadata={
            "help": "A peft config JSON (or a folder with adapter_config.json) instead of the --lora_* flags; its "
            "target_modules name MCDModel modules (vision_model..., text_model...). LoRA, LoHa or LoKr."
        },
    )

    def __post_init__(self):
        positive(self, "tokenizer_vocab_size", "projection_dim")
        self._check_start_and_adapters()
        if self.lock_text_tower and self.uses_peft and "text" in self.lora_towers:
            raise ValueError("--lock_text_tower locks the text tower: drop text from --lora_towers")
        if self.lock_text_tower and not (self.text_model_name_or_path or self.init_model_name_or_path):
            raise ValueError(
                "--lock_text_tower would lock a from-scratch text tower at its random initialisation: give "
                "--text_model_name_or_path (or --init_model_name_or_path)"
            )
        if self.text_features_cache and not self.lock_text_tower:
            raise ValueError("--text_features_cache keeps the features of a locked text tower: add --lock_text_tower")
        # A tower's size flags matter only when it is built from scratch.
        if not (self.vision_model_name_or_path or self.init_model_name_or_path):
            positive(self, "image_size", "patch_size", "vision_hidden_size", "vision_layers", "vision_heads")
            divides(self, "patch_size", "image_size", "a ViT cuts the image into whole patches")
            divides(self, "vision_heads", "vision_hidden_size", "each attention head gets an equal share of the width")
        if not (self.text_model_name_or_path or self.init_model_name_or_path):
            positive(self, "text_hidden_size", "text_layers", "text_heads")
            divides(self, "text_heads", "text_hidden_size", "each attention head gets an equal share of the width")

    @property
    def uses_peft(self) -> bool:
        """Whether the student gets adapters (`--lora_r` > 0 or `--peft_config`)."""
        return bool(self.lora_r or self.peft_config)

    def _check_start_and_adapters(self) -> None:
        if self.init_model_name_or_path and (self.vision_model_name_or_path or self.text_model_name_or_path):
            raise ValueError(
                "--init_model_name_or_path brings both towers: drop --vision_model_name_or_path and "
                "--text_model_name_or_path"
            )
        self.lora_target_modules = _split_commas(self.lora_target_modules)
        self.lora_towers = _split_commas(self.lora_towers)
        if not self.lora_target_modules:
            raise ValueError("--lora_target_modules needs at least one layer name")
        if ALL_LINEAR in self.lora_target_modules and len(self.lora_target_modules) > 1:
            raise ValueError(f"--lora_target_modules {ALL_LINEAR} stands alone, got {self.lora_target_modules}")
        if not self.lora_towers or set(self.lora_towers) - set(LORA_TOWERS):
            raise ValueError(f"--lora_towers takes one or both of {tuple(LORA_TOWERS)}, got {self.lora_towers}")
        if isinstance(self.lora_r, bool) or not isinstance(self.lora_r, int) or self.lora_r < 0:
            raise ValueError(f"--lora_r must be an int >= 0 (0: no LoRA), got {self.lora_r!r}")
        positive(self, "lora_alpha")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"--lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.peft_config is not None:
            if self.lora_r:
                raise ValueError("give --peft_config or --lora_r, not both: the file holds the whole adapter config")
            if self.lora_train_projections:
                raise ValueError(
                    "--peft_config holds the whole adapter config: list the projections in its modules_to_save "
                    "instead of --lora_train_projections"
                )
            if not os.path.exists(self.peft_config):
                raise ValueError(f"--peft_config {self.peft_config}: no such file or folder")
        if self.lora_train_projections and not self.lora_r:
            raise ValueError("--lora_train_projections trains projections next to adapters: give --lora_r > 0")


@dataclass
class DataArguments:
    """Where the image-text pairs come from, and how they are batched."""

    dataset: str = field(
        default=SYNTHETIC,
        metadata={
            "help": "'synthetic' (built in, no download), a Hub dataset name, an imagefolder directory, a "
            "save_to_disk folder, a parquet folder (Hub layout) or .parquet files, jsonl/csv/tsv files or webdataset "
            ".tar shards such as img2dataset's (globs and {a,b} / {00000..00099} lists allowed)."
        },
    )
    train_split: str = field(
        default="train",
        metadata={
            "help": "Split used for training. Rows that name their split (--split_column) are kept only if it is this "
            "one; rows of a caption file that name none are training rows."
        },
    )
    split_column: str = field(
        default="split",
        metadata={
            "help": "Column naming each row's split (jsonl/csv field, image folder metadata, Hub column, key of a "
            "webdataset sample's .json member); only --train_split's rows train. '' ignores it."
        },
    )
    validation_split: str | None = field(
        default=None,
        metadata={"help": "Split whose objective loss is evaluated with --eval_strategy (synthetic: 'validation')."},
    )
    image_column: str = field(default="image", metadata={"help": "Column holding the image (or its path)."})
    caption_column: str = field(default="caption", metadata={"help": "Column holding the caption(s)."})
    csv_img_key: str | None = field(
        default=None,
        metadata={
            "help": "open_clip's name for --image_column; both given must agree (an --image_column left at its "
            "default yields to it)."
        },
    )
    csv_caption_key: str | None = field(
        default=None,
        metadata={
            "help": "open_clip's name for --caption_column; both given must agree (a --caption_column left at its "
            "default yields to it)."
        },
    )
    csv_separator: str | None = field(
        default=None,
        metadata={"help": "Field separator of .csv/.tsv caption files; default ',' for .csv, a tab for .tsv ('\\t')."},
    )
    paths_relative_to: str = field(
        default="file",
        metadata={
            "help": "Relative image paths of a caption file are relative to its folder (file) or to the working "
            "directory (cwd, as open_clip reads them).",
            "choices": PATHS_RELATIVE_TO,
        },
    )
    streaming: bool = field(
        default=False,
        metadata={
            "help": "Stream the dataset (for data larger than the disk): each process reads its share of the shards, "
            "reshuffled every epoch from --seed, epoch after epoch until --max_steps."
        },
    )
    shuffle_buffer_size: int = field(
        default=DEFAULT_SHUFFLE_BUFFER_SIZE,
        metadata={
            "help": "With --streaming: rows held in each DataLoader worker's shuffle buffer (seeded by --seed and the "
            "epoch, so a resumed run replays the order); 0 keeps each shard's order."
        },
    )
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
    allow_paths_outside_data: bool = field(
        default=False,
        metadata={
            "help": "Let relative image paths of a jsonl/csv file leave the file's folder (../x.jpg); by default "
            "such a row is skipped as path_outside_data (or stops the run with --on_bad_sample raise)."
        },
    )
    caption_noise: float = field(
        default=0.0,
        metadata={
            "help": "Give a seeded fraction p of the training pairs another image's caption (noisy web pairs on "
            "purpose, to compare objectives under noise). Evaluation sets are never touched."
        },
    )
    eval_leak_check: bool = field(
        default=True,
        metadata={
            "help": "Before training, stop the run if an evaluation set shares an image (by path or content) with "
            "the training data; a stream is checked as it is read. Reads every training image file once."
        },
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
    eval_retrieval_split: str = field(
        default="test",
        metadata={"help": "Split of --eval_retrieval_file to evaluate on: test to report, val to choose settings."},
    )
    eval_max_samples: int | None = field(default=None, metadata={"help": "Cap each evaluation set (quick runs)."})

    def __post_init__(self):
        positive(self, "max_seq_length", "max_image_pixels", "synthetic_num_train", "synthetic_num_test")
        positive(self, "synthetic_image_size", "base_image_size", "eval_max_samples", optional=True)
        if self.max_seq_length < 2:
            raise ValueError(
                f"--max_seq_length must be at least 2 (room for [CLS] and [SEP]), got {self.max_seq_length}"
            )
        if not 0.0 <= self.mlm_probability < 1.0:
            raise ValueError(f"--mlm_probability must be in [0, 1), got {self.mlm_probability}")
        if not 0.0 <= self.caption_noise <= 1.0:
            raise ValueError(f"--caption_noise must be in [0, 1], got {self.caption_noise}")
        for alias, name, default in (
            ("csv_img_key", "image_column", "image"),
            ("csv_caption_key", "caption_column", "caption"),
        ):
            value = getattr(self, alias)
            if value is not None and getattr(self, name) not in (default, value):
                raise ValueError(
                    f"--{alias} is open_clip's name for --{name}: give one (--{name} {getattr(self, name)!r}, "
                    f"--{alias} {value!r})"
                )
            if value is not None:
                setattr(self, name, value)
        if self.csv_separator is not None:
            csv_separator("x.csv", self.csv_separator)  # one character, or a name of the tab
        if self.shuffle_buffer_size < 0:
            raise ValueError(f"--shuffle_buffer_size must be >= 0 (0: no buffer), got {self.shuffle_buffer_size}")
        if self.caption_noise and self.streaming:
            raise ValueError("--caption_noise exchanges captions across the dataset: it needs --streaming false")

    def describe(self) -> str:
        """One line about the training data, for the model card."""
        if self.dataset == SYNTHETIC:
            data = f"the built-in synthetic scenes ({self.synthetic_num_train} training images, generated)"
        else:
            data = f"`{self.dataset}` (split `{self.train_split}`)"
        if self.caption_noise:
            data += (
                f", with {100 * self.caption_noise:g} % of the pairs given another image's caption (--caption_noise)"
            )
        return data


def _split_commas(values: list[str]) -> list[str]:
    """`["vision,text"]` or `["vision", "text"]` -> `["vision", "text"]`: list flags take either form."""
    return [part.strip() for value in values for part in str(value).split(",") if part.strip()]


__all__ = [
    "DataArguments",
    "ModelArguments",
]
