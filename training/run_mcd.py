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

Exit codes (`modeling_mcd.trainer.errors`): 0 done; 2 a problem to fix (an argument, the data, the run folder, a full
disk), printed as one `run_mcd.py: error: ...` line (`MCD_DEBUG=1` adds its traceback); 3 the model was trained and
saved but its final evaluation failed; 128 + N stopped by signal N (SIGTERM 143, SIGUSR1 138, SIGINT 130) after writing
a checkpoint, which the same command resumes; 1 a bug (with its traceback), or non-finite final metrics.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
import traceback
from functools import partial
from pathlib import Path

import datasets
import transformers
from transformers import set_seed

from modeling_mcd import MCDProcessor
from modeling_mcd.data import MCDCollator, image_text_dataset, load_image_text_dataset, save_skipped_samples
from modeling_mcd.data.leakage import guard_training_data
from modeling_mcd.data.noise import mislabel_captions
from modeling_mcd.data.streaming import StreamOrder
from modeling_mcd.evaluation.report import format_metrics
from modeling_mcd.evaluation.tasks import build_eval_tasks, chance_levels, run_tasks, task_splits
from modeling_mcd.hub.model_card import write_model_card
from modeling_mcd.hub.push import HubTarget, push_model
from modeling_mcd.hub.run_record import compute_record, recipe_record, training_record
from modeling_mcd.pretraining.adapters import peft_student, save_adapters
from modeling_mcd.synthetic import SYNTHETIC, SyntheticConfig, load_synthetic_dataset, synthetic_pairs
from modeling_mcd.trainer.arguments import DataArguments
from modeling_mcd.trainer.builder import build_pretraining_model, caption_corpus, load_tokenizer
from modeling_mcd.trainer.checkpoints import clear_run_folder, last_checkpoint
from modeling_mcd.trainer.errors import EvaluationError, Preempted, UsageError, debug_requested, exit_status
from modeling_mcd.trainer.fingerprint import data_fingerprint
from modeling_mcd.trainer.mcd_trainer import MCDTrainer
from modeling_mcd.trainer.preemption import PreemptionCallback
from modeling_mcd.trainer.recipe import parse_run_args
from modeling_mcd.trainer.resume_checks import (
    ResumeAdjustments,
    check_checkpoint,
    check_model_fits,
    check_not_finished,
    check_same_run,
    run_fingerprint,
    teacher_note,
)
from modeling_mcd.trainer.run_checks import check_batches, check_steps_taken, check_text_positions
from modeling_mcd.trainer.run_lock import lock_run_folder
from modeling_mcd.trainer.teardown import exit_before_finalization, release_process_groups
from modeling_mcd.trainer.training_arguments import MCDTrainingArguments

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
        csv_separator=data_args.csv_separator,
        paths_relative_to=data_args.paths_relative_to,
    )
    if with_validation and not data_args.validation_split:
        raise ValueError(
            f"--eval_strategy {eval_strategy} needs --validation_split for --dataset {data_args.dataset} "
            "(the objective's loss is evaluated on it, with the evaluation tasks)"
        )
    return load(split=data_args.train_split), load(split=data_args.validation_split) if with_validation else None


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run a whole job; returns the final evaluation metrics. Raises on every failure (`cli_main` turns them into
    exit codes): `UsageError` and the package's other `ValueError`s for problems to fix, `EvaluationError` when the
    saved model's evaluation failed, `Preempted` when a signal stopped training after a checkpoint."""
    start = time.perf_counter()
    # 1. Parse the run (YAML recipe + flags).
    argv = list(sys.argv[1:] if argv is None else argv)
    model_args, data_args, training_args = parse_run_args(argv, default_recipe=DEFAULT_RECIPE)
    # The Trainer never pushes: its checkpoints hold the teacher, the MLM head and the optimizer. Step 9 pushes
    # the exported inference model instead. The token leaves the arguments, so no checkpoint can store it.
    hub_target = HubTarget.from_training_args(training_args)  # None without --push_to_hub
    training_args.push_to_hub, training_args.hub_token = False, None
    explicit = training_args.resume_from_checkpoint
    if explicit and not os.path.isdir(explicit):
        raise UsageError(f"--resume_from_checkpoint {explicit}: no such folder")
    checkpoint = explicit or last_checkpoint(training_args.output_dir)
    if not training_args.do_train and checkpoint is None:
        raise ValueError(
            f"--do_train false evaluates and exports a trained model, but {training_args.output_dir} holds no "
            "checkpoint (and no --resume_from_checkpoint was given): set --do_train true to train one"
        )

    # 2. Log what runs where; take the run folder (one run at a time in it).
    setup_logging(training_args)
    logger.info(
        "process %d/%d on %s; objective=%s",
        training_args.process_index,
        training_args.world_size,
        training_args.device,
        training_args.objective,
    )
    lock = lock_run_folder(training_args.output_dir, training_args.process_index == 0, training_args.world_size)
    try:
        if training_args.overwrite_output_dir:
            with training_args.main_process_first(desc="clearing the run folder"):
                if training_args.process_index == 0:
                    clear_run_folder(training_args.output_dir)
            checkpoint = None
        return _run(argv, model_args, data_args, training_args, hub_target, checkpoint, start)
    finally:
        if lock is not None:
            lock.release()


def _run(argv, model_args, data_args, training_args, hub_target, checkpoint, start) -> dict[str, float]:
    """Steps 3-9 of `main`, in the locked run folder."""
    explicit = bool(training_args.resume_from_checkpoint)
    resumed = check_checkpoint(checkpoint, training_args, explicit) if checkpoint else None
    set_seed(training_args.seed)

    # 3. Data: the pairs to train on (and validate on); a checkpoint of other data is another run's.
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
    data = data_fingerprint(raw_train, data_args.dataset, data_args.train_split)
    saved = None
    if checkpoint and training_args.do_train:
        saved = check_same_run(checkpoint, data, training_args.output_dir, explicit)
        check_not_finished(checkpoint, resumed, training_args)

    # 4. Tokenizer: a named one, the text tower's, or a WordPiece vocabulary built from the captions.
    with training_args.main_process_first(desc="loading the tokenizer"):
        tokenizer = load_tokenizer(
            model_args,
            training_args.output_dir,
            lambda: caption_corpus(raw_train),
            data_fingerprint=data,
            resuming=checkpoint is not None,
        )

    # 5. Model, datasets, collator and evaluation tasks; what depends on them is checked before any step.
    model, image_processor = build_pretraining_model(
        model_args, tokenizer, teacher_text=training_args.teacher_text, use_mlm=training_args.use_mlm
    )
    check_text_positions(model.config.text_config, data_args.max_seq_length)
    if checkpoint:
        check_model_fits(checkpoint, model.config)
    image_size = model.config.vision_config.image_size
    base_size = data_args.base_image_size or int(round(image_size * 8 / 7))
    policy = {"on_bad_sample": data_args.on_bad_sample, "max_pixels": data_args.max_image_pixels}
    # A stream: this process's share of the shards, reshuffled every epoch, epoch after epoch.
    stream = {}
    if data_args.streaming:
        rank, world = training_args.process_index, training_args.world_size
        stream["order"] = StreamOrder.for_training(training_args.seed, data_args.shuffle_buffer_size, rank, world)
    train_dataset = image_text_dataset(raw_train, base_size, seed=training_args.seed, **stream, **policy)
    eval_dataset = image_text_dataset(raw_validation, base_size, **policy) if raw_validation is not None else None
    if training_args.do_train and not data_args.streaming:
        check_batches(len(train_dataset), training_args)
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
        # send tensors, not the skipped-row records a batch carries: every process reads its own share of the
        # shards instead (`order` above), and MCDTrainer keeps accelerate from splitting that share again.
        training_args.accelerator_config.dispatch_batches = False
    preemption = PreemptionCallback()
    adjustments = ResumeAdjustments(
        teacher_note=teacher_note(saved, checkpoint, training_args) if checkpoint else None,
        continue_schedule=bool(resumed and resumed.get("missing_resume_state")),
    )
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
        callbacks=[preemption, adjustments],
    )
    trainer.run_fingerprint = run_fingerprint(data, model.config, training_args)  # written into every checkpoint
    if checkpoint:
        logger.info("resuming from %s", checkpoint)
    train_runtime = None
    if not training_args.do_train:  # evaluate and export the checkpoint's model, as it is
        trainer._load_from_checkpoint(checkpoint)
    else:
        first_step = int(resumed.get("global_step", 0)) if resumed else 0
        with preemption.handling_signals():  # SIGTERM, SIGUSR1, SIGINT: finish the step, save, stop
            result = trainer.train(resume_from_checkpoint=checkpoint)
        step = trainer.state.global_step
        if preemption.stopped_after is not None and step < trainer.state.max_steps:
            # Not finished: nothing is exported or evaluated as if it were; the next launch resumes the checkpoint.
            raise Preempted(preemption.signal, step, os.path.join(training_args.output_dir, f"checkpoint-{step}"))
        check_steps_taken(first_step, step, training_args)
        trainer.log_metrics("train", result.metrics)
        trainer.save_state()  # trainer_state.json in output_dir: the log history, i.e. the training curves
        if model.text_memo is not None and training_args.should_save:  # the locked tower's features, for next time
            model.text_memo.save()  # to its --text_features_cache file, if it has one
        train_runtime = result.metrics.get("train_runtime")
        # Every skipped row, left out while loading or found bad while decoding, is listed with the run.
        skipped = [*train_dataset.skipped_rows, *trainer.skipped_sample_rows()]  # a collective: every process
        if training_args.should_save:
            save_skipped_samples(training_args.output_dir, skipped)

    # 7. Save the inference model (student only; with LoRA, the adapters merged in) and its processor, first: an
    # evaluation that fails must not cost the trained model. With LoRA, the adapters alone too, in output_dir/adapters.
    student = model.export_student()
    export_dir = os.path.join(training_args.output_dir, "mcd-model")
    if training_args.should_save:
        student.save_pretrained(export_dir)
        if peft_student(model) is not None:
            save_adapters(model, os.path.join(training_args.output_dir, "adapters"))
        MCDProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(export_dir)

    # 8. Evaluate the student on every evaluation task, then write the model card with the run's record and metrics.
    metrics: dict[str, float] = {}
    chance = chance_levels(tasks)
    failure: Exception | None = None
    if tasks and training_args.should_save:
        try:
            metrics = run_tasks(tasks, student, tokenizer, preprocess)
        except Exception as error:  # noqa: BLE001 - reported after the card is written, with the model kept
            failure = error
        else:
            print(format_metrics("final evaluation", metrics, chance))
            trainer.log_metrics("eval", metrics)
            trainer.save_metrics("eval", {**metrics, **{f"chance_{k}": v for k, v in chance.items()}})
    if training_args.should_save:
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
    if failure is not None:
        pushed = "; it was not pushed (`mcd push` pushes it)" if hub_target is not None else ""
        raise EvaluationError(
            f"the final evaluation failed ({type(failure).__name__}: {failure}); the trained model is saved in "
            f"{export_dir}, its card without metrics{pushed}"
        ) from failure

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


def cli_main(argv: list[str] | None = None) -> int:
    """`main` as a command: returns the exit code, and prints a problem to fix as one `run_mcd.py: error:` line
    (with its traceback when `MCD_DEBUG=1`), a bug with its traceback (see the module docstring for the codes)."""
    code, _ = _run_and_release(argv)
    return code


def _run_and_release(argv: list[str] | None) -> tuple[int, bool]:
    """The exit code, and whether the run had process groups (released here, before the interpreter exits)."""
    try:
        code = _exit_code(argv)
    finally:
        # A gloo group whose threads outlive `main` can abort the process in the interpreter's finalisation.
        distributed = release_process_groups()
    return code, distributed


def _exit_code(argv: list[str] | None) -> int:
    try:
        final = main(argv)
    except KeyboardInterrupt:  # Ctrl-C outside training (during training it stops with a checkpoint instead)
        print("run_mcd.py: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - every failure gets an exit code
        status = exit_status(error, own_code=(__file__,))
        if status is None:
            traceback.print_exc()
            return 1
        code, message = status
        cause_is_bug = isinstance(error, EvaluationError) and exit_status(error.__cause__, (__file__,)) is None
        if debug_requested() or cause_is_bug:
            traceback.print_exc()
        print(f"run_mcd.py: {'' if isinstance(error, Preempted) else 'error: '}{message}", file=sys.stderr)
        return code
    if final and int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: round(v, 4) for k, v in final.items()}))
    return 0 if math.isfinite(sum(final.values()) if final else 0.0) else 1


if __name__ == "__main__":
    exit_code, was_distributed = _run_and_release(None)
    if was_distributed:  # a group may still be alive (DeepSpeed keeps the world group): leave before the teardown
        exit_before_finalization(exit_code)
    sys.exit(exit_code)
