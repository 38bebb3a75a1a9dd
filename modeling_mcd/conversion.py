# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Start from a pretrained dual encoder: a saved `MCDModel`, or a transformers `CLIPModel` or
`VisionTextDualEncoderModel` converted on load into an `MCDModel` with the same weights and embeddings
(`--init_model_name_or_path`).

The three classes name their parameters alike (`vision_model.*`, `text_model.*`, `visual_projection`, `text_projection`,
`logit_scale`) when the towers are built as `AutoModel.from_config` builds them (CLIP's as `CLIPVisionModel` and
`CLIPTextModel`), and all three embed with the towers' `pooler_output` (CLIP: the [CLS] token after the last
LayerNorm, and the end-of-text token), which is MCD's `pooling="pooler"`. So the conversion is a copy of the state dict;
only the log-temperature changes shape, () -> (1,). Embeddings are equal; logits too, unless a CLIP temperature is
above 100, where `MCDModel` clamps it (CLIP's own training clamps it there too). The inverse, `MCDModel` ->
`VisionTextDualEncoderModel`, is `modeling_mcd.export`.
"""

from __future__ import annotations

import os

from transformers import AutoConfig, CLIPModel, PreTrainedModel, VisionTextDualEncoderModel

from .configuration_mcd import MCDConfig
from .modeling_mcd import MCDModel

#: The model types `--init_model_name_or_path` takes, and the class that loads each one.
DUAL_ENCODER_CLASSES = {
    MCDConfig.model_type: MCDModel,
    "clip": CLIPModel,
    "vision-text-dual-encoder": VisionTextDualEncoderModel,
}


def load_state_exactly(target: PreTrainedModel, state: dict) -> None:
    """`target.load_state_dict(state)`, where only non-persistent buffers (`position_ids`) may be missing: any other
    missing or unexpected key is a `RuntimeError` naming both classes."""
    missing, unexpected = target.load_state_dict(state, strict=False)
    missing = [key for key in missing if not key.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(
            f"the weights do not fit {type(target).__name__}: missing={missing}, unexpected={unexpected}"
        )


def from_dual_encoder(model: CLIPModel | VisionTextDualEncoderModel) -> MCDModel:
    r"""
    The `MCDModel` equal to a transformers dual encoder: same towers, projections and temperature, `pooler` pooling.

    Args:
        model (`CLIPModel` or `VisionTextDualEncoderModel`)

    Returns:
        `MCDModel` in the dtype of `model`, giving the same `get_image_features` / `get_text_features`.
    """
    config = model.config
    mcd_config = MCDConfig.from_vision_text_configs(
        config.vision_config,
        config.text_config,
        projection_dim=config.projection_dim,
        logit_scale_init_value=float(config.logit_scale_init_value),
        vision_pooling="pooler",
        text_pooling="pooler",
    )
    student = MCDModel(mcd_config)
    state = model.state_dict()
    state["logit_scale"] = state["logit_scale"].reshape(1)  # MCD keeps it (1,) for DeepSpeed (see MCDModel)
    load_state_exactly(student, state)
    return student.to(dtype=next(model.parameters()).dtype)


def load_dual_encoder(name_or_path: str | os.PathLike, **kwargs) -> MCDModel:
    r"""
    A pretrained dual encoder as an `MCDModel`: a saved `MCDModel` as it is, a `CLIPModel` or
    `VisionTextDualEncoderModel` folder (or Hub id) converted with [`from_dual_encoder`].

    Args:
        name_or_path (`str` or `os.PathLike`): the folder or Hub id.
        kwargs: passed to `from_pretrained` (`revision`, `dtype`, …); weights are read from safetensors only unless
            `use_safetensors` says otherwise (never a pickled `pytorch_model.bin` by default).

    Returns:
        `MCDModel`, whose `name_or_path` is `name_or_path` (peft records it as the adapters' base model).
    """
    model_type = getattr(AutoConfig.from_pretrained(name_or_path), "model_type", None)
    if model_type not in DUAL_ENCODER_CLASSES:
        raise ValueError(
            f"--init_model_name_or_path {name_or_path}: a {model_type!r} model is not a dual encoder to start from; "
            f"expected one of {sorted(DUAL_ENCODER_CLASSES)}"
        )
    model = DUAL_ENCODER_CLASSES[model_type].from_pretrained(name_or_path, **{"use_safetensors": True, **kwargs})
    if isinstance(model, MCDModel):
        return model
    student = from_dual_encoder(model)
    student.config._name_or_path = str(name_or_path)
    return student


__all__ = ["DUAL_ENCODER_CLASSES", "from_dual_encoder", "load_dual_encoder", "load_state_exactly"]
