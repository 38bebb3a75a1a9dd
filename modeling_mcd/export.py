# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Export a trained MCD model to folders that apps can load.

- `export_to_vision_text_dual_encoder`: a stock transformers `VisionTextDualEncoderModel` folder, so an
  app needs no custom code and no `trust_remote_code`. The two classes share the parameter names
  (`vision_model.*`, `text_model.*`, `visual_projection`, `text_projection`, `logit_scale`), so the
  conversion is a state-dict copy; it is exact only for `pooling="pooler"` on both towers, which is
  what `VisionTextDualEncoderModel` does.
"""

from __future__ import annotations

import os

from transformers import (
    AutoProcessor,
    VisionTextDualEncoderConfig,
    VisionTextDualEncoderModel,
    VisionTextDualEncoderProcessor,
)

from .conversion import load_state_exactly
from .modeling_mcd import MCDModel


def to_vision_text_dual_encoder(model: MCDModel) -> VisionTextDualEncoderModel:
    r"""
    Convert an [`MCDModel`] into an equivalent transformers `VisionTextDualEncoderModel`.

    Args:
        model (`MCDModel`): the trained dual encoder.

    Returns:
        `VisionTextDualEncoderModel` giving the same `get_image_features` / `get_text_features`.

    Raises:
        `ValueError` if a tower does not use `"pooler"` pooling (the stock class always uses the
        tower's `pooler_output`, so any other pooling would silently change the embeddings).
    """
    config = model.config
    for field in ("vision_pooling", "text_pooling"):
        if getattr(config, field) != "pooler":
            raise ValueError(
                f"MCDConfig.{field}={getattr(config, field)!r}: VisionTextDualEncoderModel always pools with the "
                "tower's pooler_output, so only pooling='pooler' exports exactly. Keep the MCDModel folder "
                "(trust_remote_code) for this model."
            )
    vtde_config = VisionTextDualEncoderConfig.from_vision_text_configs(
        config.vision_config,
        config.text_config,
        projection_dim=config.projection_dim,
        logit_scale_init_value=float(config.logit_scale_init_value),
    )
    vtde = VisionTextDualEncoderModel(vtde_config)
    state = model.state_dict()
    # The stock class has no clamp on the temperature: store the clamped value so logits match too.
    # MCD keeps the log-scale as shape (1,) (DeepSpeed cannot broadcast 0-dim parameters); the stock class as ().
    state["logit_scale"] = model.logit_scale.detach().clamp(max=config.logit_scale_max).reshape(())
    load_state_exactly(vtde, state)  # only non-persistent buffers (position_ids) may differ between the two classes
    return vtde.to(dtype=next(model.parameters()).dtype).eval()


def export_to_vision_text_dual_encoder(model_path: str | os.PathLike, output_dir: str | os.PathLike) -> str:
    r"""
    Write a `VisionTextDualEncoderModel` folder (safetensors + processor) from a saved MCD folder.

    Args:
        model_path (`str`): a folder written by `MCDModel.save_pretrained` (and its processor).
        output_dir (`str`): where to write the stock folder.

    Returns:
        `str`: `output_dir`.
    """
    # Everything is read and converted before the first file is written: a folder that cannot be exported leaves
    # no half export behind.
    try:
        processor = AutoProcessor.from_pretrained(model_path)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{model_path} has no processor files (save an MCDProcessor with the model): {error}"
        ) from error
    model = MCDModel.from_pretrained(model_path)
    vtde = to_vision_text_dual_encoder(model)
    vtde.save_pretrained(output_dir)
    VisionTextDualEncoderProcessor(
        image_processor=processor.image_processor, tokenizer=processor.tokenizer
    ).save_pretrained(output_dir)
    return str(output_dir)


__all__ = ["export_to_vision_text_dual_encoder", "to_vision_text_dual_encoder"]
