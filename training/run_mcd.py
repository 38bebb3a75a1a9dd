#!/usr/bin/env python
# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Pretrain an image-text dual encoder with MCD, evaluate it, and save the inference model.

    accelerate launch training/run_mcd.py                                  # the built-in demo (CPU, minutes)
    accelerate launch training/run_mcd.py training/configs/flickr8k_cpu.yaml
    accelerate launch training/run_mcd.py training/configs/demo.yaml --max_steps 50 --output_dir runs/x

The first argument may be a YAML file holding a whole run (keys are the flags below); flags after it
override it. Without a YAML file the `demo` recipe (training/configs/demo.yaml) is the base that
flags override: a small ViT + BERT trained from scratch on the built-in synthetic scenes.

Every flag has a `help`: `python training/run_mcd.py --help`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import datasets
import torch
import transformers
import yaml
from transformers import (
    AutoImageProcessor,
    AutoTokenizer,
    BertConfig,
    HfArgumentParser,
    ViTConfig,
    ViTImageProcessorPil,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

from modeling_mcd import MCDConfig, MCDModel, MCDProcessor
from modeling_mcd.augmentation import eval_transform
from modeling_mcd.data import MCDCollator, image_text_dataset, load_image_text_dataset, resize_center_crop
from modeling_mcd.evaluation.tasks import RetrievalTask, ZeroShotTask, run_tasks
from modeling_mcd.hub import write_model_card
from modeling_mcd.pretraining import MCDForPreTraining
from modeling_mcd.synthetic import (
    SyntheticConfig,
    load_synthetic_dataset,
    retrieval_dataset,
    zero_shot_classes,
    zero_shot_dataset,
)
from modeling_mcd.trainer import MCDTrainer, MCDTrainingArguments
from modeling_mcd.wordpiece import train_wordpiece_tokenizer

logger = logging.getLogger("run_mcd")

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "demo.yaml"
# The card template sits in the checkout next to training/, so a non-editable install of the package works too.
CARD_TEMPLATE = Path(__file__).resolve().parent.parent / "hub_cards" / "mcd_model_card.md.jinja"
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
    vision_pooling: str = field(default="pooler", metadata={"help": "Image pooling: pooler | cls | mean."})
    text_pooling: str = field(default="pooler", metadata={"help": "Text pooling: pooler | cls | mean."})
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
    on_bad_sample: str = field(default="skip", metadata={"help": "skip (count and log) | raise (stop, naming the row)."})
    max_image_pixels: int = field(default=8192 * 8192, metadata={"help": "Larger images count as decompression bombs."})
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


def parse_args(argv: list[str] | None) -> tuple[ModelArguments, DataArguments, MCDTrainingArguments]:
    """Flags, optionally preceded by a YAML file; no argument at all means the demo recipe."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not (argv and argv[0].endswith((".yaml", ".yml"))):
        argv = [str(DEFAULT_CONFIG)] + argv  # flags without a recipe override the demo recipe
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


def setup_logging(args: MCDTrainingArguments) -> None:
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", handlers=[logging.StreamHandler()]
    )
    level = args.get_process_log_level()
    logger.setLevel(level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run a whole job; returns the final evaluation metrics."""
    # 1. Parse the run (YAML + flags).
    model_args, data_args, training_args = parse_args(argv)

    # 2. Log what runs where.
    setup_logging(training_args)
    logger.info(
        "process %d/%d on %s; objective=%s", training_args.process_index, training_args.world_size,
        training_args.device, training_args.objective,
    )
    set_seed(training_args.seed)

    # 3. Data: the pairs to train on, and the evaluation sets.
    synthetic_config = SyntheticConfig(
        image_size=data_args.synthetic_image_size,
        num_train=data_args.synthetic_num_train,
        num_test=data_args.synthetic_num_test,
        seed=training_args.seed,
    )
    evaluate_during_training = training_args.eval_strategy != "no"
    raw_validation = None
    with training_args.main_process_first(desc="loading data"):
        if data_args.dataset == SYNTHETIC:
            splits = load_synthetic_dataset(synthetic_config)
            raw_train = synthetic_pairs(splits["train"])
            if evaluate_during_training:
                raw_validation = synthetic_pairs(splits["validation"])
        else:
            load = partial(
                load_image_text_dataset,
                data_args.dataset,
                image_column=data_args.image_column,
                caption_column=data_args.caption_column,
                streaming=data_args.streaming,
            )
            raw_train = load(split=data_args.train_split)
            if evaluate_during_training:
                if not data_args.validation_split:
                    raise ValueError(
                        f"--eval_strategy {training_args.eval_strategy} needs --validation_split for --dataset "
                        f"{data_args.dataset} (the objective's loss is evaluated on it, with the evaluation tasks)"
                    )
                raw_validation = load(split=data_args.validation_split)

    # 4. Tokenizer: the text tower's, a named one, or WordPiece trained on the captions.
    tokenizer_source = model_args.tokenizer_name_or_path or model_args.text_model_name_or_path
    if tokenizer_source:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    else:
        # Trained once and kept in output_dir: every process, and a resumed run, then use the same vocabulary.
        tokenizer_dir = os.path.join(training_args.output_dir, "tokenizer")
        with training_args.main_process_first(desc="training the tokenizer"):
            if os.path.isfile(os.path.join(tokenizer_dir, "tokenizer.json")):
                tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
            else:
                tokenizer = train_wordpiece_tokenizer(
                    caption_corpus(raw_train), vocab_size=model_args.tokenizer_vocab_size
                )
                tokenizer.save_pretrained(tokenizer_dir)
                logger.info("trained a WordPiece tokenizer on the captions: %d tokens", len(tokenizer))

    # 5. Model: from configs, or from two pretrained towers.
    model, image_processor = build_model(model_args, tokenizer, training_args)
    image_size = model.config.vision_config.image_size
    base_size = data_args.base_image_size or int(round(image_size * 8 / 7))
    train_dataset = image_text_dataset(
        raw_train,
        base_size,
        on_bad_sample=data_args.on_bad_sample,
        max_pixels=data_args.max_image_pixels,
        seed=training_args.seed,
    )
    eval_dataset = None
    if raw_validation is not None:
        eval_dataset = image_text_dataset(
            raw_validation, base_size, on_bad_sample=data_args.on_bad_sample, max_pixels=data_args.max_image_pixels
        )
    collator = MCDCollator(
        tokenizer=tokenizer,
        max_length=data_args.max_seq_length,
        mlm_probability=data_args.mlm_probability if training_args.use_mlm else 0.0,
    )  # no seed: MCDTrainer seeds each batch's masking from its samples, so a resumed run masks alike
    preprocess = partial(
        preprocess_for_eval, image_size=image_size, mean=image_processor.image_mean, std=image_processor.image_std
    )
    tasks = build_eval_tasks(data_args, synthetic_config)

    # 6. Train (resuming from the last checkpoint in output_dir if there is one).
    trainer = MCDTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        processing_class=tokenizer,
        image_mean=image_processor.image_mean,
        image_std=image_processor.image_std,
        eval_tasks=tasks,
        eval_preprocess=preprocess,
    )
    checkpoint = training_args.resume_from_checkpoint
    if checkpoint is None and os.path.isdir(training_args.output_dir):
        checkpoint = get_last_checkpoint(training_args.output_dir)
        if checkpoint:
            logger.info("resuming from %s", checkpoint)
    if training_args.do_train:  # every recipe sets do_train; --do_train false only evaluates a resumed model
        result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.log_metrics("train", result.metrics)
        skipped = trainer.total_bad_sample_counts()
        logger.info("bad samples skipped: %s", {k: v for k, v in skipped.items() if v} or "none")

    # 7. Evaluate the student on every evaluation set.
    student = model.export_student()
    metrics: dict[str, float] = {}
    chance = chance_levels(tasks)
    if tasks and training_args.should_save:
        metrics = run_tasks(tasks, student, tokenizer, preprocess)
        print_metrics(metrics, chance)
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", {**metrics, **{f"chance_{k}": v for k, v in chance.items()}})

    # 8. Save the inference model (student only), its processor and a model card.
    if training_args.should_save:
        export_dir = os.path.join(training_args.output_dir, "mcd-model")
        student.save_pretrained(export_dir)
        MCDProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(export_dir)
        write_model_card(
            export_dir,
            student.config,
            training_args=training_args,
            dataset_description=describe_dataset(data_args),
            metrics=metrics,
            chance=chance,
            steps=trainer.state.global_step,
            template_path=CARD_TEMPLATE,
        )
        logger.info("saved the inference model to %s", export_dir)
    trainer.accelerator.wait_for_everyone()
    return metrics


def synthetic_pairs(split: datasets.Dataset) -> datasets.Dataset:
    """A synthetic split as image/caption pairs; `caption` holds all 5 captions (one is drawn per step)."""
    return split.select_columns(["image", "captions"]).rename_column("captions", "caption")


def caption_corpus(dataset) -> list[str]:
    """Every caption of a (small) dataset, for tokenizer training; lists of captions are flattened."""
    if isinstance(dataset, datasets.IterableDataset):
        raise ValueError("training a tokenizer needs a non-streaming dataset; pass --tokenizer_name_or_path")
    column = dataset["caption"]
    texts: list[str] = []
    for value in column:
        texts.extend(value if isinstance(value, list) else [value])
    return [t for t in texts if isinstance(t, str)]


def build_model(model_args: ModelArguments, tokenizer, training_args: MCDTrainingArguments):
    """The pretraining model and the image processor whose normalisation the views use."""
    if bool(model_args.vision_model_name_or_path) != bool(model_args.text_model_name_or_path):
        raise ValueError("give both --vision_model_name_or_path and --text_model_name_or_path, or neither")
    if model_args.vision_model_name_or_path:
        student = MCDModel.from_vision_text_pretrained(
            model_args.vision_model_name_or_path,
            model_args.text_model_name_or_path,
            projection_dim=model_args.projection_dim,
            vision_pooling=model_args.vision_pooling,
            text_pooling=model_args.text_pooling,
        )
        if student.config.text_config.vocab_size < len(tokenizer):
            raise ValueError(
                f"the tokenizer has {len(tokenizer)} tokens but the text tower only {student.config.text_config.vocab_size}"
            )
        model = MCDForPreTraining.from_student(student, teacher_text=training_args.teacher_text)
        image_processor = AutoImageProcessor.from_pretrained(model_args.vision_model_name_or_path)
    else:
        vision = ViTConfig(
            image_size=model_args.image_size,
            patch_size=model_args.patch_size,
            hidden_size=model_args.vision_hidden_size,
            num_hidden_layers=model_args.vision_layers,
            num_attention_heads=model_args.vision_heads,
            intermediate_size=4 * model_args.vision_hidden_size,
        )
        text = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=model_args.text_hidden_size,
            num_hidden_layers=model_args.text_layers,
            num_attention_heads=model_args.text_heads,
            intermediate_size=4 * model_args.text_hidden_size,
            pad_token_id=tokenizer.pad_token_id,
        )
        config = MCDConfig.from_vision_text_configs(
            vision,
            text,
            projection_dim=model_args.projection_dim,
            vision_pooling=model_args.vision_pooling,
            text_pooling=model_args.text_pooling,
        )
        # `_from_config` (not the constructor) so that DeepSpeed ZeRO-3 can build the model partitioned
        model = MCDForPreTraining._from_config(config, teacher_text=training_args.teacher_text)
        image_processor = ViTImageProcessorPil(
            size={"height": model_args.image_size, "width": model_args.image_size},
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
        )
    model.mcd.set_tower_gradient_checkpointing(
        vision=model_args.gradient_checkpointing_vision, text=model_args.gradient_checkpointing_text
    )
    return model, image_processor


def preprocess_for_eval(images: list, image_size: int, mean, std) -> torch.Tensor:
    """PIL images -> the evaluation view (resize + centre crop, SPEC §1). (B, 3, S, S)"""
    uint8 = torch.stack([resize_center_crop(image, image_size) for image in images])  # (B, 3, S, S)
    return eval_transform(uint8, image_size, mean, std)


def build_eval_tasks(data_args: DataArguments, synthetic_config: SyntheticConfig) -> list:
    """The evaluation sets named by the arguments."""
    tasks: list = []
    cap = data_args.eval_max_samples

    def head(dataset):
        return dataset.select(range(min(cap, len(dataset)))) if cap else dataset

    if data_args.eval_synthetic:
        classnames, templates = zero_shot_classes(synthetic_config)
        zero_shot = head(zero_shot_dataset(synthetic_config, split="test"))
        tasks.append(ZeroShotTask("synthetic", zero_shot["image"], zero_shot["label"], classnames, templates))
        retrieval = head(retrieval_dataset(synthetic_config, split="test"))
        tasks.append(RetrievalTask.from_groups("synthetic", retrieval["image"], retrieval["captions"]))
    if data_args.eval_zero_shot_folder:
        from modeling_mcd.evaluation.data import load_labelled_images
        from modeling_mcd.evaluation.templates import get_templates

        labelled = load_labelled_images(data_args.eval_zero_shot_folder)
        images, labels = labelled.images, labelled.labels
        if cap and cap < len(images):
            # a seeded subset: folders are sorted by class, so the first `cap` images would be one class
            keep = sorted(random.Random(0).sample(range(len(images)), cap))
            images, labels = [images[i] for i in keep], labels[keep]
        folder = Path(data_args.eval_zero_shot_folder)
        name = folder.parent.name if folder.name in ("test", "val", "validation", "train") else folder.name
        if labelled.classnames is None:
            raise ValueError(f"--eval_zero_shot_folder {data_args.eval_zero_shot_folder}: no class names found")
        classnames = labelled.classnames
        templates = get_templates(data_args.eval_zero_shot_templates)
        tasks.append(ZeroShotTask(name, images, labels.tolist(), classnames, templates))
    if data_args.eval_retrieval_file:
        from modeling_mcd.evaluation.data import load_captioned_images

        captioned = load_captioned_images(data_args.eval_retrieval_file, split="test")
        images, texts, text_to_image = captioned.images, captioned.captions, captioned.text_to_image.tolist()
        if cap:
            keep = [i for i, image in enumerate(text_to_image) if image < cap]
            images = [images[i] for i in range(min(cap, len(images)))]
            texts, text_to_image = [texts[i] for i in keep], [text_to_image[i] for i in keep]
        tasks.append(RetrievalTask(Path(data_args.eval_retrieval_file).parent.name, images, texts, text_to_image))
    return tasks


def chance_levels(tasks: list) -> dict[str, float]:
    """What a random model scores on each task's headline metrics."""
    chance: dict[str, float] = {}
    for task in tasks:
        if isinstance(task, ZeroShotTask):
            chance[f"{task.name}_zero_shot_top1"] = task.chance
        else:
            chance[f"{task.name}_retrieval_image_to_text_R@1"] = task.chance
            chance[f"{task.name}_retrieval_text_to_image_R@1"] = task.chance
    return chance


def print_metrics(metrics: dict[str, float], chance: dict[str, float]) -> None:
    width = max(len(k) for k in metrics)
    print("\n" + "=" * (width + 24))
    print(f"{'metric':<{width}}  {'value':>8}  {'chance':>8}")
    for name, value in metrics.items():
        c = chance.get(name)
        print(f"{name:<{width}}  {value:>8.4f}  {'' if c is None else f'{c:>8.4f}'}")
    print("=" * (width + 24) + "\n")


def describe_dataset(data_args: DataArguments) -> str:
    if data_args.dataset == SYNTHETIC:
        return f"the built-in synthetic scenes ({data_args.synthetic_num_train} training images, generated)"
    return f"`{data_args.dataset}` (split `{data_args.train_split}`)"


if __name__ == "__main__":
    final = main()
    if final and int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: round(v, 4) for k, v in final.items()}))
    sys.exit(0 if math.isfinite(sum(final.values()) if final else 0.0) else 1)
