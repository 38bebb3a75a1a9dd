# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Model cards for exported MCD models, rendered with `huggingface_hub.ModelCard` from the Jinja
template in `hub_cards/` (installed as the package data `modeling_mcd.hub_cards`)."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from .configuration_mcd import MCDConfig

#: The card template, found wherever the package is installed (a wheel, an editable checkout).
DEFAULT_TEMPLATE = Path(str(files("modeling_mcd.hub_cards") / "mcd_model_card.md.jinja"))


def _tower_description(config) -> str:
    parts = [config.model_type]
    for name in ("num_hidden_layers", "hidden_size", "num_attention_heads", "patch_size", "image_size", "vocab_size"):
        if hasattr(config, name):
            parts.append(f"{name}={getattr(config, name)}")
    return ", ".join(parts)


def render_model_card(
    config: MCDConfig,
    repo_id: str = "org/mcd-model",
    training_args=None,
    dataset_description: str = "not recorded",
    metrics: dict[str, float] | None = None,
    chance: dict[str, float] | None = None,
    steps: int | None = None,
    template_path: str | os.PathLike | None = None,
) -> ModelCard:
    r"""
    Render the model card of an exported MCD model.

    Args:
        config (`MCDConfig`): the exported model's config.
        repo_id (`str`, *optional*): the Hub repository the card's snippets load from.
        training_args (`MCDTrainingArguments`, *optional*): the run's arguments (objective, batch, lr).
        dataset_description (`str`, *optional*): one line about the training data.
        metrics (`dict[str, float]`, *optional*): final evaluation metrics, shown in a table.
        chance (`dict[str, float]`, *optional*): chance level of the headline metrics.
        steps (`int`, *optional*): optimizer steps trained.
        template_path (`str`, *optional*): a Jinja template; defaults to `hub_cards/mcd_model_card.md.jinja`.

    Returns:
        `huggingface_hub.ModelCard`
    """
    template = Path(template_path) if template_path else DEFAULT_TEMPLATE
    if not template.is_file():
        raise FileNotFoundError(f"model card template not found: {template} (pass template_path=)")
    card_data = ModelCardData(
        library_name="transformers",
        license="apache-2.0",
        pipeline_tag="zero-shot-image-classification",
        tags=["mcd", "clip", "vision-language", "contrastive-learning"],
    )
    args = training_args
    return ModelCard.from_template(
        card_data,
        template_path=str(template),
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        projection_dim=config.projection_dim,
        vision_description=_tower_description(config.vision_config),
        text_description=_tower_description(config.text_config),
        vision_pooling=config.vision_pooling,
        text_pooling=config.text_pooling,
        dataset_description=dataset_description,
        objective=getattr(args, "objective", "unknown"),
        use_mlm=getattr(args, "use_mlm", False),
        steps=steps if steps is not None else "unknown",
        global_batch=(args.per_device_train_batch_size * args.world_size) if args is not None else "unknown",
        learning_rate=getattr(args, "learning_rate", "unknown"),
        metrics=metrics or {},
        chance=chance or {},
    )


def write_model_card(output_dir: str | os.PathLike, config: MCDConfig, **kwargs) -> str:
    """Render the card (see [`render_model_card`]) into `output_dir/README.md`; returns its path."""
    path = os.path.join(output_dir, "README.md")
    render_model_card(config, **kwargs).save(path)
    return path


__all__ = ["DEFAULT_TEMPLATE", "render_model_card", "write_model_card"]
