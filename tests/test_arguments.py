# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""modeling_mcd.trainer.arguments: a YAML recipe becomes flags, flags override it, and choices come from the code."""

from __future__ import annotations

import re

import pytest

from modeling_mcd.configuration_mcd import POOLING_CHOICES
from modeling_mcd.objective.mcd_loss import OBJECTIVES
from modeling_mcd.trainer.arguments import DataArguments
from modeling_mcd.trainer.recipe import parse_run_args, yaml_to_flags
from modeling_mcd.trainer.training_arguments import MCDTrainingArguments


def test_yaml_values_become_flags_lists_spread_and_none_dropped():
    flags = yaml_to_flags({"max_steps": 5, "orig_crop_scale": [0.5, 1.0], "x": None})
    assert flags == ["--max_steps", "5", "--orig_crop_scale", "0.5", "1.0"]


def test_flags_override_the_recipe_and_the_rest_comes_from_it(tmp_path):
    recipe = tmp_path / "run.yaml"
    recipe.write_text("max_steps: 5\npatch_size: 4\nobjective: mpnce\norig_crop_scale: [0.6, 0.9]\n")
    model_args, data_args, training_args = parse_run_args([str(recipe), "--max_steps", "7", "--output_dir", "o"])
    assert training_args.max_steps == 7  # the flag wins
    assert model_args.patch_size == 4 and training_args.objective == "mpnce"  # from the recipe
    assert training_args.orig_crop_scale == [0.6, 0.9]
    assert data_args.dataset == DataArguments.dataset  # neither says: the dataclass default


def test_default_recipe_is_the_base_when_no_yaml_is_given(tmp_path):
    recipe = tmp_path / "default.yaml"
    recipe.write_text("patch_size: 4\n")
    model_args, _, _ = parse_run_args(["--output_dir", "o"], default_recipe=recipe)
    assert model_args.patch_size == 4
    model_args, _, _ = parse_run_args(["--output_dir", "o", "--patch_size", "8"], default_recipe=recipe)
    assert model_args.patch_size == 8


@pytest.mark.parametrize(("flag", "choices"), [("--objective", OBJECTIVES), ("--vision_pooling", POOLING_CHOICES)])
def test_choice_flags_refuse_unknown_values_and_list_the_choices(capsys, flag, choices):
    with pytest.raises(SystemExit):
        parse_run_args([flag, "simclr", "--output_dir", "o"])
    error = capsys.readouterr().err
    assert flag in error and all(choice in error for choice in choices)


def test_training_arguments_built_in_code_validate_too():
    with pytest.raises(ValueError, match="--objective"):
        MCDTrainingArguments(output_dir="o", objective="simclr")
    with pytest.raises(ValueError, match="--base_momentum"):
        MCDTrainingArguments(output_dir="o", base_momentum=1.5)


BAD_ARGUMENTS = [
    (["--max_steps", "0", "--num_train_epochs", "0"], "no step to take"),
    (["--image_size", "50", "--patch_size", "8"], "--image_size 50 is not a multiple of --patch_size 8"),
    (["--vision_hidden_size", "95", "--vision_heads", "4"], "--vision_hidden_size 95 is not a multiple of"),
    (["--text_hidden_size", "100", "--text_heads", "3"], "--text_hidden_size 100 is not a multiple of"),
    (["--per_device_train_batch_size", "-4"], "--per_device_train_batch_size must be a positive"),
    (["--learning_rate", "-0.001"], "--learning_rate must be a positive"),
    (["--learning_rate", "0"], "--learning_rate must be a positive"),
    (["--projection_dim", "0"], "--projection_dim must be a positive"),
    (["--mlm_probability", "1.5"], "--mlm_probability must be in"),
    (["--max_seq_length", "1"], "--max_seq_length must be at least 2"),
    (["--weight_decay", "-0.1"], "--weight_decay must be a number >= 0"),
    (["--lambda_neg", "-1"], "--lambda_neg must be a number >= 0"),
    (["--distill_eps", "0"], "--distill_eps must be a positive"),
    (["--aug_crop_scale", "0.9", "0.1"], "--aug_crop_scale takes two area fractions"),
    (["--orig_crop_scale", "0", "1"], "--orig_crop_scale takes two area fractions"),
    (["--base_image_size", "0"], "--base_image_size must be a positive"),
    (["--distill_pos", "false", "--distill_neg", "false", "--distill_noisy", "false"], "use --objective mpnce"),
    (["--objective", "mpnce", "--teacher_text", "ema"], "--teacher_text ema"),
]


@pytest.mark.parametrize(("flags", "message"), BAD_ARGUMENTS)
def test_invalid_arguments_fail_before_anything_runs_naming_the_flag(tmp_path, flags, message):
    recipe = tmp_path / "run.yaml"
    recipe.write_text(
        "do_train: true\nimage_size: 48\npatch_size: 8\nvision_hidden_size: 96\nvision_heads: 4\nmax_steps: 5\n"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_run_args([str(recipe), "--output_dir", str(tmp_path / "o"), *flags])
    assert not (tmp_path / "o").exists()  # nothing was written: no data read, no model built


def test_a_missing_column_is_named_before_the_model_is_built(tmp_path):
    from modeling_mcd.data import load_image_text_dataset

    captions = tmp_path / "captions.jsonl"
    captions.write_text('{"file_name": "a.png", "text": "a red circle"}\n')
    with pytest.raises(ValueError, match="caption_column='caption' is not a column"):
        load_image_text_dataset(str(captions), image_column="file_name")
