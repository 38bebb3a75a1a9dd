# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""MCD configuration.

This file is shipped as Hub remote code next to the weights, so it imports torch and
transformers only (no other module of this package).
"""

from __future__ import annotations

import math
from typing import ClassVar

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

#: How a tower's sequence of hidden states becomes one vector before the projection.
#: ``"pooler"`` uses the tower's own ``pooler_output`` (ViT/BERT: dense + tanh on [CLS]), which is
#: what :class:`~transformers.VisionTextDualEncoderModel` does, so only ``"pooler"`` exports exactly
#: to that stock class. ``"cls"`` takes the raw first token, ``"mean"`` averages the non-padding tokens.
POOLING_CHOICES = ("pooler", "cls", "mean")

#: log(1/0.07): CLIP's initial temperature (docs/method.md §Notation).
DEFAULT_LOGIT_SCALE_INIT = math.log(1 / 0.07)
#: CLIP clamps the learnable scale at 100, i.e. log(100) in log space.
DEFAULT_LOGIT_SCALE_MAX = math.log(100.0)


class MCDConfig(PreTrainedConfig):
    r"""
    Configuration of an [`MCDModel`]: a vision tower (any ViT-like config) and a text tower (any
    BERT-like config), each followed by a linear projection into a shared space of
    `projection_dim`, and a learnable temperature.

    Only the fields that couple the two towers live here; everything about a tower lives in its own
    sub-config, exactly as in [`~transformers.VisionTextDualEncoderConfig`]. `MCDConfig()` with no
    arguments describes the paper's ViT-B/32 + BERT-base.

    Args:
        vision_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of the image tower. A `dict` without `model_type` is read as a `ViTConfig`.
            Defaults to ViT-B/32 at 224 px.
        text_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of the text tower. A `dict` without `model_type` is read as a `BertConfig`.
            Defaults to BERT-base (uncased vocabulary size).
        projection_dim (`int`, *optional*, defaults to 512):
            Dimension of the shared embedding space.
        logit_scale_init_value (`float`, *optional*, defaults to log(1/0.07)):
            Initial value of the learnable log-temperature.
        logit_scale_max (`float`, *optional*, defaults to log(100)):
            The log-temperature is clamped at this value in every forward pass.
        vision_pooling (`str`, *optional*, defaults to `"pooler"`):
            One of `"pooler"`, `"cls"`, `"mean"`; see `POOLING_CHOICES`.
        text_pooling (`str`, *optional*, defaults to `"pooler"`):
            One of `"pooler"`, `"cls"`, `"mean"`.
        initializer_factor (`float`, *optional*, defaults to 1.0):
            Scales the initial std of the two projections, `hidden_size**-0.5 * initializer_factor` as in
            [`~transformers.CLIPConfig`]. The towers are initialised by their own configs.

    Example:

    ```python
    >>> from transformers import BertConfig, ViTConfig
    >>> from modeling_mcd import MCDConfig, MCDModel
    >>> config = MCDConfig.from_vision_text_configs(ViTConfig(patch_size=32), BertConfig(), projection_dim=512)
    >>> model = MCDModel(config)
    ```
    """

    model_type: ClassVar[str] = "mcd"
    sub_configs_defaults: ClassVar[dict] = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="vit", init_kwargs={"patch_size": 32}),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="bert"),
    }

    vision_config: PreTrainedConfig | dict | None = None
    text_config: PreTrainedConfig | dict | None = None
    projection_dim: int = 512
    logit_scale_init_value: float = DEFAULT_LOGIT_SCALE_INIT
    logit_scale_max: float = DEFAULT_LOGIT_SCALE_MAX
    vision_pooling: str = "pooler"
    text_pooling: str = "pooler"
    # A default, so that configs saved before this field existed still load.
    initializer_factor: float = 1.0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self._validate()

    def _validate(self) -> None:
        """Raise `ValueError` naming the offending field; called on every construction and load."""
        if (
            not isinstance(self.projection_dim, int)
            or isinstance(self.projection_dim, bool)
            or self.projection_dim <= 0
        ):
            raise ValueError(f"MCDConfig.projection_dim must be a positive integer, got {self.projection_dim!r}")
        for name in ("logit_scale_init_value", "logit_scale_max"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"MCDConfig.{name} must be a finite number, got {value!r}")
        factor = self.initializer_factor
        is_number = isinstance(factor, (int, float)) and not isinstance(factor, bool)
        if not is_number or not math.isfinite(factor) or factor <= 0:
            raise ValueError(f"MCDConfig.initializer_factor must be a positive finite number, got {factor!r}")
        if self.logit_scale_init_value > self.logit_scale_max:
            raise ValueError(
                f"MCDConfig.logit_scale_init_value ({self.logit_scale_init_value}) must not exceed "
                f"logit_scale_max ({self.logit_scale_max})"
            )
        for name in ("vision_pooling", "text_pooling"):
            if getattr(self, name) not in POOLING_CHOICES:
                raise ValueError(f"MCDConfig.{name} must be one of {POOLING_CHOICES}, got {getattr(self, name)!r}")
        for name in ("vision_config", "text_config"):
            if not hasattr(getattr(self, name), "hidden_size"):
                raise ValueError(f"MCDConfig.{name} must describe a transformer tower with a `hidden_size`")
        if not hasattr(self.vision_config, "image_size"):
            raise ValueError("MCDConfig.vision_config must have an `image_size` (a ViT-like config)")
        if not hasattr(self.text_config, "vocab_size"):
            raise ValueError("MCDConfig.text_config must have a `vocab_size` (a BERT-like config)")

    @classmethod
    def from_vision_text_configs(
        cls, vision_config: PreTrainedConfig, text_config: PreTrainedConfig, **kwargs
    ) -> MCDConfig:
        r"""
        Build an [`MCDConfig`] from a vision tower config and a text tower config.

        Args:
            vision_config (`PreTrainedConfig`): the image tower's config (e.g. `ViTConfig`).
            text_config (`PreTrainedConfig`): the text tower's config (e.g. `BertConfig`).
            kwargs: any other `MCDConfig` field (`projection_dim`, `vision_pooling`, ...).
        """
        return cls(vision_config=vision_config.to_dict(), text_config=text_config.to_dict(), **kwargs)


__all__ = ["POOLING_CHOICES", "MCDConfig"]
