# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""modeling_mcd.arguments: a YAML recipe becomes flags, flags override it, and choices come from the code."""

from __future__ import annotations

import pytest

from modeling_mcd.arguments import DataArguments, MCDTrainingArguments, parse_run_args, yaml_to_flags
from modeling_mcd.configuration_mcd import POOLING_CHOICES
from modeling_mcd.objective import OBJECTIVES


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
    model_args, _, _ = parse_run_args(["--output_dir", "o", "--patch_size", "6"], default_recipe=recipe)
    assert model_args.patch_size == 6


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
