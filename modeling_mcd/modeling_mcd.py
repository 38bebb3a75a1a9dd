# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""MCD dual encoder for inference (docs/method.md §7): student image tower + text tower, two projections, a
learnable temperature. No teacher, no MLM head: those live in `MCDForPreTraining`.

This file is shipped as Hub remote code next to the weights, so it imports torch, transformers and
`configuration_mcd` only.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.clip.modeling_clip import CLIPOutput, image_text_contrastive_loss
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple, logging

from .configuration_mcd import MCDConfig

logger = logging.get_logger(__name__)


def pool_tower_output(
    outputs: BaseModelOutputWithPooling, pooling: str, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Reduce a tower's output to one vector per sample.

    Args:
        outputs: the tower's `BaseModelOutputWithPooling`; `last_hidden_state` is (B, L, D).
        pooling: `"pooler"` (the tower's `pooler_output`), `"cls"` (first token) or `"mean"`
            (average over tokens whose `attention_mask` is 1, or all tokens for images).
        attention_mask: (B, L) for text, `None` for images.

    Returns:
        (B, D) pooled features.
    """
    if pooling == "pooler":
        if outputs.pooler_output is None:
            raise ValueError("pooling='pooler' but the tower returned no pooler_output; use 'cls' or 'mean'")
        return outputs.pooler_output
    hidden = outputs.last_hidden_state  # (B, L, D)
    if pooling == "cls":
        return hidden[:, 0]
    if attention_mask is None:
        return hidden.mean(dim=1)
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, L, 1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def encode_tower(
    tower: nn.Module,
    projection: nn.Module,
    pooling: str,
    attention_mask: torch.Tensor | None = None,
    **inputs,
) -> BaseModelOutputWithPooling:
    """The one encoder path of MCD: tower -> pool -> project (not normalised).

    The student (`MCDModel.get_image_features` / `get_text_features`) and the EMA teacher
    (`MCDForPreTraining`) both go through here, so they cannot drift apart.

    Args:
        tower: a transformers tower (ViT-like or BERT-like) returning `BaseModelOutputWithPooling`.
        projection: the linear projection into the shared space, (D -> P).
        pooling: `"pooler"`, `"cls"` or `"mean"` (see `pool_tower_output`).
        attention_mask: (B, L) for text; `None` for images.
        inputs: the tower's inputs (`pixel_values=` or `input_ids=`, `token_type_ids=`, ...) and output flags
            (`output_hidden_states=`, `output_attentions=`), passed on to the tower.

    Returns:
        The tower's output with `pooler_output` replaced by the projected features, (B, P). Always a
        `ModelOutput`: a `return_dict` in `inputs` is overridden, since pooling reads the output's fields.
    """
    if attention_mask is not None:
        inputs["attention_mask"] = attention_mask
    outputs = tower(**{**inputs, "return_dict": True})
    pooled = pool_tower_output(outputs, pooling, attention_mask)  # (B, D)
    outputs.pooler_output = projection(pooled)  # (B, P)
    return outputs


def load_pretrained_tower(name_or_path: str, modality: str, **kwargs) -> PreTrainedModel:
    """One pretrained tower (a hub id or local folder) with `AutoModel.from_pretrained`; a CLIP checkpoint given as
    the `"vision"` tower contributes its `CLIPVisionModel`. Weights are read from safetensors files only
    (`use_safetensors=True` unless `kwargs` say otherwise)."""
    kwargs = {"use_safetensors": True, **kwargs}
    if modality == "vision":
        config = AutoConfig.from_pretrained(name_or_path)
        if getattr(config, "model_type", None) == "clip":
            from transformers import CLIPVisionModel

            return CLIPVisionModel.from_pretrained(name_or_path, config=config.vision_config, **kwargs)
    return AutoModel.from_pretrained(name_or_path, **kwargs)


def load_pretrained_towers(
    vision_model_name_or_path: str,
    text_model_name_or_path: str,
    vision_kwargs: dict | None = None,
    text_kwargs: dict | None = None,
) -> tuple[PreTrainedModel, PreTrainedModel]:
    """The two pretrained towers, each by [`load_pretrained_tower`]."""
    return (
        load_pretrained_tower(vision_model_name_or_path, "vision", **(vision_kwargs or {})),
        load_pretrained_tower(text_model_name_or_path, "text", **(text_kwargs or {})),
    )


def build_tower(config, pooling: str) -> PreTrainedModel:
    """`AutoModel.from_config`, dropping the tower's pooler layer when it would be unused.

    An unused pooler would leave parameters without gradients, which DDP rejects unless
    `find_unused_parameters` is set.
    """
    kwargs = {}
    model_class = AutoModel._model_mapping[type(config)]
    if pooling != "pooler" and "add_pooling_layer" in inspect.signature(model_class.__init__).parameters:
        kwargs["add_pooling_layer"] = False
    return AutoModel.from_config(config, **kwargs)


class MCDPreTrainedModel(PreTrainedModel):
    """Weight initialisation and the class attributes shared by the MCD models."""

    config_class = MCDConfig
    config: MCDConfig
    base_model_prefix = "mcd"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, reading safetensors weights only (`use_safetensors=True` unless given
        otherwise): a folder with only a pickled `pytorch_model.bin` is refused, never unpickled."""
        kwargs.setdefault("use_safetensors", True)
        return super().from_pretrained(*args, **kwargs)

    def _init_weights(self, module: nn.Module) -> None:
        # Towers are PreTrainedModels: `initialize_weights` dispatches to their own `_init_weights`.
        # Only what MCD adds is initialised here, with CLIP's scheme: std = width**-0.5 * initializer_factor.
        if isinstance(module, MCDModel):
            factor = module.config.initializer_factor
            init.normal_(module.visual_projection.weight, std=module.vision_embed_dim**-0.5 * factor)
            init.normal_(module.text_projection.weight, std=module.text_embed_dim**-0.5 * factor)
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)


class MCDModel(MCDPreTrainedModel):
    r"""
    The MCD dual encoder (the student of MCD pretraining), with the surface of transformers'
    `CLIPModel`: `get_image_features`, `get_text_features`, and a `forward` that returns
    `logits_per_image` for the `zero-shot-image-classification` pipeline.

    The towers are plain transformers models built with `AutoModel.from_config`; nothing of ViT or
    BERT is re-implemented here.
    """

    def __init__(
        self,
        config: MCDConfig,
        vision_model: PreTrainedModel | None = None,
        text_model: PreTrainedModel | None = None,
    ):
        super().__init__(config)
        self.vision_model = (
            vision_model if vision_model is not None else build_tower(config.vision_config, config.vision_pooling)
        )
        self.text_model = text_model if text_model is not None else build_tower(config.text_config, config.text_pooling)
        # The towers must read the composite config's sub-configs, so that attention implementation and
        # later edits stay in sync (as in VisionTextDualEncoderModel).
        self.config.vision_config._attn_implementation = self.vision_model.config._attn_implementation
        self.config.text_config._attn_implementation = self.text_model.config._attn_implementation
        self.vision_model.config = self.config.vision_config
        self.text_model.config = self.config.text_config

        self.vision_embed_dim = config.vision_config.hidden_size
        self.text_embed_dim = config.text_config.hidden_size
        self.projection_dim = config.projection_dim
        self.visual_projection = nn.Linear(self.vision_embed_dim, self.projection_dim, bias=False)
        self.text_projection = nn.Linear(self.text_embed_dim, self.projection_dim, bias=False)
        # Shape (1,), not CLIP's (): DeepSpeed 0.19 broadcasts every parameter as `p.data.view(torch.uint8)`,
        # which torch refuses for 0-dim tensors. `get_logit_scale` returns a 0-dim tensor as CLIP's would.
        self.logit_scale = nn.Parameter(torch.tensor([float(config.logit_scale_init_value)]))
        self.post_init()

    # ----------------------------------------------------------------------------------------- features
    @can_return_tuple
    def get_image_features(
        self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False, **kwargs: Unpack[TransformersKwargs]
    ) -> BaseModelOutputWithPooling | tuple:
        r"""
        Project images into the shared space (not normalised), as `CLIPModel.get_image_features` does
        in transformers 5.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`): normalised images.
            interpolate_pos_encoding (`bool`, *optional*): forwarded to towers that accept it.
            kwargs: `output_hidden_states`, `output_attentions` (the latter needs eager attention), ... for the
                image tower; `return_dict=False` (or `config.return_dict=False`) returns a tuple.

        Returns:
            `BaseModelOutputWithPooling` whose `pooler_output` is `(batch_size, projection_dim)`.
        """
        if interpolate_pos_encoding:
            kwargs["interpolate_pos_encoding"] = True
        return encode_tower(
            self.vision_model, self.visual_projection, self.config.vision_pooling, pixel_values=pixel_values, **kwargs
        )

    @can_return_tuple
    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling | tuple:
        r"""
        Project token ids into the shared space (not normalised).

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, seq_len)`)
            attention_mask (`torch.LongTensor` of shape `(batch_size, seq_len)`, *optional*)
            position_ids, token_type_ids (*optional*): forwarded to the text tower when given.
            kwargs: as for `get_image_features`, for the text tower.

        Returns:
            `BaseModelOutputWithPooling` whose `pooler_output` is `(batch_size, projection_dim)`.
        """
        if position_ids is not None:
            kwargs["position_ids"] = position_ids
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        return encode_tower(
            self.text_model,
            self.text_projection,
            self.config.text_pooling,
            attention_mask,
            input_ids=input_ids,
            **kwargs,
        )

    def get_logit_scale(self) -> torch.Tensor:
        """exp(logit_scale), with the log-scale clamped at `config.logit_scale_max` (CLIP's 100)."""
        return self.logit_scale.clamp(max=self.config.logit_scale_max).exp().squeeze(0)  # ()

    # ------------------------------------------------------------------------------------------ forward
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        return_loss: bool | None = None,
        token_type_ids: torch.LongTensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CLIPOutput | tuple:
        r"""
        Embed images and texts and score every image against every text.

        Args:
            input_ids (`torch.LongTensor` of shape `(text_batch_size, seq_len)`)
            pixel_values (`torch.FloatTensor` of shape `(image_batch_size, 3, height, width)`)
            attention_mask, position_ids, token_type_ids (*optional*): for the text tower.
            return_loss (`bool`, *optional*): also return CLIP's contrastive loss (needs equal batch sizes).
            kwargs: `output_hidden_states`, `output_attentions` (needs eager attention), ... go to both towers, whose
                outputs carry them in `vision_model_output` / `text_model_output`; `return_dict=False` (or
                `config.return_dict=False`) returns `CLIPOutput.to_tuple()`, the towers' outputs as nested tuples.

        Returns:
            transformers' `CLIPOutput`: `logits_per_image` (I, T), `logits_per_text` (T, I), `image_embeds`,
            `text_embeds` (L2-normalised), the towers' outputs and, with `return_loss`, CLIP's loss.
        """
        if input_ids is None or pixel_values is None:
            raise ValueError("MCDModel.forward needs both `input_ids` and `pixel_values`")
        # `return_dict=True`: the feature methods would otherwise follow `config.return_dict` and hand back tuples,
        # where `pooler_output` is needed below; the tuple, if asked for, is made once by `can_return_tuple`.
        vision_outputs = self.get_image_features(
            pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True, **kwargs
        )
        text_outputs = self.get_text_features(
            input_ids, attention_mask, position_ids, token_type_ids, return_dict=True, **kwargs
        )
        image_embeds = nn.functional.normalize(vision_outputs.pooler_output, dim=-1)  # (I, P)
        text_embeds = nn.functional.normalize(text_outputs.pooler_output, dim=-1)  # (T, P)

        logits_per_text = self.get_logit_scale() * text_embeds @ image_embeds.t()  # (T, I)
        logits_per_image = logits_per_text.t()  # (I, T)
        loss = image_text_contrastive_loss(logits_per_text) if return_loss else None

        return CLIPOutput(
            loss=loss,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            text_model_output=text_outputs,
            vision_model_output=vision_outputs,
        )

    # ---------------------------------------------------------------------------------- constructors
    @classmethod
    def from_vision_text_pretrained(
        cls,
        vision_model_name_or_path: str,
        text_model_name_or_path: str,
        projection_dim: int = 512,
        vision_pooling: str = "pooler",
        text_pooling: str = "pooler",
        **kwargs,
    ) -> MCDModel:
        r"""
        Build an MCD model from two pretrained towers (hub ids or local folders); the projections and
        the temperature are newly initialised.

        A CLIP checkpoint given as the vision tower contributes its `CLIPVisionModel`.

        Args:
            vision_model_name_or_path (`str`): a ViT-like model id or folder.
            text_model_name_or_path (`str`): a BERT-like model id or folder.
            projection_dim (`int`, *optional*, defaults to 512)
            vision_pooling, text_pooling (`str`, *optional*, defaults to `"pooler"`)
            kwargs: `vision_*` / `text_*` keys go to the towers' `from_pretrained` (for example
                `text_attn_implementation="sdpa"`); the rest (`logit_scale_init_value`, ...) to `MCDConfig`.
        """
        vision_kwargs = {k[len("vision_") :]: kwargs.pop(k) for k in list(kwargs) if k.startswith("vision_")}
        text_kwargs = {k[len("text_") :]: kwargs.pop(k) for k in list(kwargs) if k.startswith("text_")}
        vision_model, text_model = load_pretrained_towers(
            vision_model_name_or_path, text_model_name_or_path, vision_kwargs, text_kwargs
        )
        config = MCDConfig.from_vision_text_configs(
            vision_model.config,
            text_model.config,
            projection_dim=projection_dim,
            vision_pooling=vision_pooling,
            text_pooling=text_pooling,
            **kwargs,
        )
        model = cls(config, vision_model=vision_model, text_model=text_model)
        logger.warning(
            "MCDModel built from pretrained towers: visual_projection, text_projection and logit_scale are newly "
            "initialised; train the model before using it for predictions."
        )
        return model

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus the `auto_map` entry that lets the
        `zero-shot-image-classification` pipeline load this folder with `trust_remote_code=True`
        (it asks `AutoModelForZeroShotImageClassification`, which `register_for_auto_class` cannot add
        next to `AutoModel`)."""
        if self._auto_class is not None:
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            auto_map["AutoModelForZeroShotImageClassification"] = (
                f"{type(self).__module__.split('.')[-1]}.{type(self).__name__}"
            )
            self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)

    def set_tower_gradient_checkpointing(
        self, vision: bool = True, text: bool = True, gradient_checkpointing_kwargs: dict | None = None
    ) -> None:
        """Switch activation checkpointing on or off for each tower separately."""
        for tower, enabled in ((self.vision_model, vision), (self.text_model, text)):
            if enabled:
                tower.activation_checkpointing_enable(activation_checkpointing_kwargs=gradient_checkpointing_kwargs)
            elif tower.is_activation_checkpointing:
                tower.activation_checkpointing_disable()


__all__ = [
    "MCDModel",
    "MCDPreTrainedModel",
    "encode_tower",
    "load_pretrained_tower",
    "load_pretrained_towers",
    "pool_tower_output",
]
