#!/usr/bin/env python
# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Pretrain an image-text dual encoder with MCD, evaluate it, and save the inference model.

    accelerate launch training/run_mcd.py                                  # the built-in demo (CPU, minutes)
    accelerate launch training/run_mcd.py training/configs/flickr8k_cpu.yaml
    accelerate launch training/run_mcd.py training/configs/demo.yaml --max_steps 50 --output_dir runs/x
    accelerate launch training/run_mcd.py --push_to_hub --hub_model_id org/name   # then push the inference model

The first argument may be a YAML file holding a whole run (keys are the flags); flags after it override it.
Without a YAML file the `demo` recipe (training/configs/demo.yaml) is the base that flags override: a small
ViT + BERT trained from scratch on the built-in synthetic scenes.

This file is the launch layer only: it parses, then runs numbered steps. Every piece it calls lives in
`modeling_mcd` (arguments, builder, data, evaluation, trainer, hub), where `mcd`, `bench/` and the tests use
it too. Every flag has a `help`: `python training/run_mcd.py --help`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from functools import partial
from pathlib import Path

import datasets
import transformers
from transformers import set_seed

from modeling_mcd import MCDProcessor
from modeling_mcd.arguments import SYNTHETIC, DataArguments, parse_run_args
from modeling_mcd.training_arguments import MCDTrainingArguments
from modeling_mcd.builder import build_pretraining_model, caption_corpus, load_tokenizer
from modeling_mcd.checkpoints import last_checkpoint
from modeling_mcd.data import MCDCollator, image_text_dataset, load_image_text_dataset, save_skipped_samples
from modeling_mcd.data.leakage import guard_training_data
from modeling_mcd.data.noise import mislabel_captions
from modeling_mcd.evaluation.report import format_metrics
from modeling_mcd.evaluation.tasks import build_eval_tasks, chance_levels, run_tasks, task_splits
from modeling_mcd.hub import HubTarget, push_model
from modeling_mcd.lora import peft_student, save_adapters
from modeling_mcd.model_card import write_model_card
from modeling_mcd.run_record import compute_record, recipe_record, training_record
from modeling_mcd.synthetic import SyntheticConfig, load_synthetic_dataset, synthetic_pairs
from modeling_mcd.trainer import MCDTrainer

logger = logging.getLogger("run_mcd")

DEFAULT_RECIPE = Path(__file__).parent / "configs" / "demo.yaml"
ROOT = Path(__file__).resolve().parent.parent


def setup_logging(args: MCDTrainingArguments) -> None:
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", handlers=[logging.StreamHandler()]
    )
    level = args.get_process_log_level()
    logger.setLevel(level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


def load_pairs(data_args: DataArguments, synthetic: SyntheticConfig, with_validation: bool, eval_strategy: str):
    """The raw training pairs and, when evaluating during training, the validation pairs (or `None`)."""
    if data_args.dataset == SYNTHETIC:
        splits = load_synthetic_dataset(synthetic)
        return synthetic_pairs(splits["train"]), synthetic_pairs(splits["validation"]) if with_validation else None
    load = partial(
        load_image_text_dataset,
        data_args.dataset,
        image_column=data_args.image_column,
        caption_column=data_args.caption_column,
        streaming=data_args.streaming,
        allow_paths_outside_data=data_args.allow_paths_outside_data,
        split_column=data_args.split_column or None,
        train_split=data_args.train_split,
    )
    if with_validation and not data_args.validation_split:
        raise ValueError(
            f"--eval_strategy {eval_strategy} needs --validation_split for --dataset {data_args.dataset} "
            "(the objective's loss is evaluated on it, with the evaluation tasks)"
        )
    return load(split=data_args.train_split), load(split=data_args.validation_split) if with_validation else None


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run a whole job; returns the final evaluation metrics."""
    start = time.perf_counter()
    # 1. Parse the run (YAML recipe + flags).
    argv = list(sys.argv[1:] if argv is None else argv)
    model_args, data_args, training_args = parse_run_args(argv, default_recipe=DEFAULT_RECIPE)
    # The Trainer never pushes: its checkpoints hold the teacher, the MLM head and the optimizer. Step 9 pushes
    # the exported inference model instead. The token leaves the arguments, so no checkpoint can store it.
    hub_target = HubTarget.from_training_args(training_args)  # None without --push_to_hub
    training_args.push_to_hub, training_args.hub_token = False, None
    checkpoint = training_args.resume_from_checkpoint or last_checkpoint(training_args.output_dir)
    if not training_args.do_train and checkpoint is None:
        raise ValueError(
            f"--do_train false evaluates and exports a trained model, but {training_args.output_dir} holds no "
            "checkpoint (and no --resume_from_checkpoint was given): set --do_train true to train one"
        )

    # 2. Log what runs where.
    setup_logging(training_args)
    logger.info(
        "process %d/%d on %s; objective=%s",
        training_args.process_index,
        training_args.world_size,
        training_args.device,
        training_args.objective,
    )
    set_seed(training_args.seed)

    # 3. Data: the pairs to train on (and validate on).
    synthetic = SyntheticConfig(
        image_size=data_args.synthetic_image_size,
        num_train=data_args.synthetic_num_train,
        num_test=data_args.synthetic_num_test,
        seed=training_args.seed,
    )
    with_validation = training_args.eval_strategy != "no"
    with training_args.main_process_first(desc="loading data"):
        raw_train, raw_validation = load_pairs(data_args, synthetic, with_validation, training_args.eval_strategy)
        if data_args.caption_noise:
            raw_train, noise = mislabel_captions(raw_train, data_args.caption_noise, training_args.seed)
            logger.warning(noise.describe())

    # 4. Tokenizer: a named one, the text tower's, or a WordPiece vocabulary built from the captions.
    with training_args.main_process_first(desc="loading the tokenizer"):
        tokenizer = load_tokenizer(model_args, training_args.output_dir, lambda: caption_corpus(raw_train))

    # 5. Model, datasets, collator and evaluation tasks.
    model, image_processor = build_pretraining_model(
        model_args, tokenizer, teacher_text=training_args.teacher_text, use_mlm=training_args.use_mlm
    )
    image_size = model.config.vision_config.image_size
    base_size = data_args.base_image_size or int(round(image_size * 8 / 7))
    policy = {"on_bad_sample": data_args.on_bad_sample, "max_pixels": data_args.max_image_pixels}
    train_dataset = image_text_dataset(raw_train, base_size, seed=training_args.seed, **policy)
    eval_dataset = image_text_dataset(raw_validation, base_size, **policy) if raw_validation is not None else None
    collator = MCDCollator(
        tokenizer=tokenizer,
        max_length=data_args.max_seq_length,
        mlm_probability=data_args.mlm_probability if training_args.use_mlm else 0.0,
    )  # no seed: MCDTrainer seeds each batch's masking from its samples, so a resumed run masks alike
    mean, std = image_processor.image_mean, image_processor.image_std
    # The evaluation view (docs/method.md §1) is the saved processor itself: what `mcd eval` and the pipeline apply.
    preprocess = partial(image_processor, return_tensors="pt")
    tasks = build_eval_tasks(
        synthetic if data_args.eval_synthetic else None,
        zero_shot_folder=data_args.eval_zero_shot_folder,
        zero_shot_templates=data_args.eval_zero_shot_templates,
        retrieval_file=data_args.eval_retrieval_file,
        retrieval_split=data_args.eval_retrieval_split,
        max_samples=data_args.eval_max_samples,
        on_bad_image=data_args.on_bad_sample,
        split_column=data_args.split_column or "split",  # '' turns the column off for training data only
    )
    if data_args.eval_leak_check and training_args.do_train:
        # Stops here, before any step, if an evaluation image is a training image (by path or content).
        guard_training_data(train_dataset, {f"{task.name}_{task.kind}": task.images for task in tasks})

    # 6. Train, resuming from the last checkpoint in output_dir if there is one.
    if data_args.streaming and training_args.world_size > 1:
        # accelerate would read the stream on the main process and send each process its batch, but it can only
        # send tensors, not the skipped-row records a batch carries: every process reads the stream and keeps its
        # own share of the batches instead.
        training_args.accelerator_config.dispatch_batches = False
    trainer = MCDTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        processing_class=tokenizer,
        image_mean=mean,
        image_std=std,
        eval_tasks=tasks,
        eval_preprocess=preprocess,
    )
    if checkpoint:
        logger.info("resuming from %s", checkpoint)
    train_runtime = None
    if not training_args.do_train:  # evaluate and export the checkpoint's model, as it is
        trainer._load_from_checkpoint(checkpoint)
    else:
        result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.log_metrics("train", result.metrics)
        trainer.save_state()  # trainer_state.json in output_dir: the log history, i.e. the training curves
        if model.text_memo is not None and training_args.should_save:  # the locked tower's features, for next time
            model.text_memo.save()  # to its --text_features_cache file, if it has one
        train_runtime = result.metrics.get("train_runtime")
        # Every skipped row, left out while loading or found bad while decoding, is listed with the run.
        skipped = [*train_dataset.skipped_rows, *trainer.skipped_sample_rows()]  # a collective: every process
        if training_args.should_save:
            save_skipped_samples(training_args.output_dir, skipped)

    # 7. Evaluate the student on every evaluation task.
    student = model.export_student()
    metrics: dict[str, float] = {}
    chance = chance_levels(tasks)
    if tasks and training_args.should_save:
        metrics = run_tasks(tasks, student, tokenizer, preprocess)
        print(format_metrics("final evaluation", metrics, chance))
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", {**metrics, **{f"chance_{k}": v for k, v in chance.items()}})

    # 8. Save the inference model (student only; with LoRA, the adapters merged in), its processor and a model card
    # with the run's record; with LoRA, the adapters alone too, in output_dir/adapters.
    export_dir = os.path.join(training_args.output_dir, "mcd-model")
    if training_args.should_save:
        student.save_pretrained(export_dir)
        if peft_student(model) is not None:
            save_adapters(model, os.path.join(training_args.output_dir, "adapters"))
        MCDProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(export_dir)
        record = training_record(
            training_args,
            model_args,
            data_args,
            repo_id=hub_target.repo_id if hub_target else None,
            steps=trainer.state.global_step,
            metrics=metrics,
            chance=chance,
            splits=task_splits(tasks),
            compute=compute_record(training_args, trainer.accelerator, train_runtime, time.perf_counter() - start),
            **recipe_record(
                argv,
                DEFAULT_RECIPE,
                program=str(Path(__file__).resolve().relative_to(ROOT)),
                root=ROOT,
                secrets=[hub_target.token if hub_target else None],
            ),
        )
        write_model_card(export_dir, student.config, record)
        logger.info("saved the inference model to %s", export_dir)
    trainer.accelerator.wait_for_everyone()

    # 9. Push the exported folder (not the checkpoints) with --push_to_hub.
    if hub_target is not None and training_args.should_save:
        push_model(
            export_dir,
            hub_target.repo_id,
            private=hub_target.private,
            token=hub_target.token,
            commit_message=f"End of training: {trainer.state.global_step} steps, objective {training_args.objective}",
        )
        logger.info("pushed the inference model to https://huggingface.co/%s", hub_target.repo_id)
    return metrics


if __name__ == "__main__":
    final = main()
    if final and int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: round(v, 4) for k, v in final.items()}))
    sys.exit(0 if math.isfinite(sum(final.values()) if final else 0.0) else 1)
