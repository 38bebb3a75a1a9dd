# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""A saved MCD model as open_clip's `(model, preprocess, tokenizer)`, for CLIP_benchmark and open_clip-style code.

open_clip's `create_model_and_transforms` and `get_tokenizer` give a model with `encode_image(images)` and
`encode_text(tokens)` (unnormalised features) and `logit_scale` (the log of the temperature), an image transform
`preprocess(PIL image) -> (3, H, W)` tensor, and a tokenizer `tokenizer(texts) -> LongTensor (N, context_length)`.
[`load`] gives the same three parts for a folder that `mcd eval` reads (an `MCDModel`, `CLIPModel` or
`VisionTextDualEncoderModel` with its processor), so CLIP_benchmark evaluates an MCD model in three lines:

```python
from clip_benchmark.datasets.builder import build_dataset
from clip_benchmark.metrics import zeroshot_classification
from torch.utils.data import DataLoader

from modeling_mcd.open_clip_compat import load

model, preprocess, tokenizer = load("runs/demo/mcd-model", device="cuda")
dataset = build_dataset("wds/cifar10", root="wds_cifar10", transform=preprocess, split="test")
metrics = zeroshot_classification.evaluate(model, DataLoader(dataset, batch_size=64), tokenizer, dataset.classes,
                                           templates, device="cuda")  # templates: e.g. the folder's templates file
```

(`zeroshot_retrieval.evaluate(model, dataloader, tokenizer, device)` likewise.) [`load_for_clip_benchmark`] has the
signature of CLIP_benchmark's model loaders (`clip_benchmark.models.TYPE2FUNC`), with the folder as `pretrained`.

The parts compute what `mcd eval` computes: `preprocess` decodes an image as `mcd eval` does (RGB, transparency on
white, EXIF rotation, a centre crop to at most 4:1) and applies the saved image processor, the evaluation view;
`tokenizer` pads every text to `context_length` (the longest text the model takes), and `encode_text` rebuilds the
attention mask from the padding, which a BERT-style text tower needs: a padded token it attends to changes the text's
embedding. CLIP_benchmark's zero-shot and retrieval loops on these parts give `mcd eval`'s metrics
(`tests/test_open_clip_compat.py`).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from .evaluation.features import _embedding, default_max_length, load_dual_encoder


def attention_mask_from_padding(
    input_ids: torch.Tensor, pad_token_id: int, keep_first_pad: bool = False, padding_side: str = "right"
) -> torch.Tensor:
    r"""
    The attention mask of padded token ids: 0 on the run of `pad_token_id` that ends (right padding) or starts (left
    padding) every row, 1 elsewhere.

    Args:
        input_ids (`torch.LongTensor` of shape `(batch_size, seq_len)`)
        pad_token_id (`int`)
        keep_first_pad (`bool`, *optional*, defaults to `False`): the pad token is also the last real token (CLIP's
            tokenizers pad with their end-of-text token), so the first of the run is text, not padding.
        padding_side (`str`, *optional*, defaults to `"right"`)

    Returns:
        `torch.LongTensor` of shape `(batch_size, seq_len)`.
    """
    ids = input_ids.flip(-1) if padding_side == "right" else input_ids
    # A position is padding when it and every position before it (in the flipped order, from the padded end) is.
    padding = (ids == pad_token_id).long().cumprod(dim=-1).bool()
    if keep_first_pad and padding_side == "right":
        padding &= padding.long().cumsum(dim=-1) < padding.long().sum(dim=-1, keepdim=True)
    mask = (~padding).long()
    return mask.flip(-1) if padding_side == "right" else mask


class OpenCLIPTokenizer:
    """`tokenizer(texts) -> LongTensor (N, context_length)`, as open_clip's: the model's tokenizer, every text padded
    (and truncated) to `context_length`."""

    def __init__(self, tokenizer, context_length: int):
        self.tokenizer, self.context_length = tokenizer, context_length

    def __call__(self, texts: str | list[str], context_length: int | None = None) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        length = context_length or self.context_length
        tokens = self.tokenizer(texts, padding="max_length", truncation=True, max_length=length, return_tensors="pt")
        return tokens["input_ids"]


class OpenCLIPPreprocess:
    """`preprocess(image) -> (3, H, W)` float tensor: an image decoded as `mcd eval` decodes it, then the saved image
    processor. A plain class, so that the `DataLoader` workers of CLIP_benchmark can pickle it."""

    def __init__(self, image_processor):
        self.image_processor = image_processor

    def __call__(self, image: Any) -> torch.Tensor:
        from PIL import Image

        from .data.decoding import crop_to_aspect_ratio, decode_image

        if isinstance(image, Image.Image):
            image = crop_to_aspect_ratio(decode_image(image, max_pixels=None))
        return self.image_processor(images=[image], return_tensors="pt")["pixel_values"][0]


class OpenCLIPModel(nn.Module):
    r"""
    A dual encoder with open_clip's interface.

    Args:
        model (`nn.Module`): a model with `get_image_features` and `get_text_features` (`MCDModel`, `CLIPModel`,
            `VisionTextDualEncoderModel`).
        tokenizer: its tokenizer; its pad token, padding side and inputs tell how to rebuild the attention mask (and
            `token_type_ids`, all 0, for a BERT tower) from token ids.
    """

    def __init__(self, model: nn.Module, tokenizer):
        super().__init__()
        self.model = model
        if tokenizer.pad_token_id is None:
            raise ValueError(f"{type(tokenizer).__name__} has no pad token: the padding could not be told from text")
        self.pad_token_id = int(tokenizer.pad_token_id)
        # CLIP pads with its end-of-text token, which is also the last token of every text.
        ends = {tokenizer.eos_token_id, tokenizer.sep_token_id, tokenizer.bos_token_id, tokenizer.cls_token_id}
        self.keep_first_pad = self.pad_token_id in ends
        self.padding_side = getattr(tokenizer, "padding_side", "right")
        accepted = set(inspect.signature(model.get_text_features).parameters)
        self.token_type_ids = "token_type_ids" in accepted and "token_type_ids" in tokenizer.model_input_names
        self.attention_mask = "attention_mask" in accepted

    @property
    def logit_scale(self) -> torch.Tensor:
        """The log of the temperature, a 0-dim tensor as open_clip's (clamped as the model clamps it)."""
        scale = self.model.logit_scale.reshape(())
        maximum = getattr(self.model.config, "logit_scale_max", None)
        return scale.clamp(max=maximum) if maximum is not None else scale

    def _device_and_dtype(self) -> tuple[torch.device, torch.dtype]:
        parameter = next(self.model.parameters())
        return parameter.device, parameter.dtype

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """`(B, 3, H, W)` pixels -> `(B, projection_dim)` image features (unit length with `normalize=True`)."""
        device, dtype = self._device_and_dtype()
        output = self.model.get_image_features(pixel_values=image.to(device=device, dtype=dtype))
        features = _embedding(output, "get_image_features")
        return nn.functional.normalize(features, dim=-1) if normalize else features

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """`(B, L)` token ids padded with the tokenizer's pad token -> `(B, projection_dim)` text features."""
        device, _ = self._device_and_dtype()
        input_ids = text.to(device)
        inputs = {"input_ids": input_ids}
        if self.attention_mask:
            inputs["attention_mask"] = attention_mask_from_padding(
                input_ids, self.pad_token_id, self.keep_first_pad, self.padding_side
            )
        if self.token_type_ids:
            inputs["token_type_ids"] = torch.zeros_like(input_ids)  # one sentence per text, as the tokenizer gives
        features = _embedding(self.model.get_text_features(**inputs), "get_text_features")
        return nn.functional.normalize(features, dim=-1) if normalize else features

    def forward(self, image: torch.Tensor | None = None, text: torch.Tensor | None = None):
        """open_clip's `forward`: normalised image and text features (`None` for a missing input) and the
        temperature, `logit_scale.exp()`."""
        image_features = self.encode_image(image, normalize=True) if image is not None else None
        text_features = self.encode_text(text, normalize=True) if text is not None else None
        return image_features, text_features, self.logit_scale.exp()


def load(
    path: str, device: str | torch.device = "cpu", context_length: int | None = None
) -> tuple[OpenCLIPModel, OpenCLIPPreprocess, OpenCLIPTokenizer]:
    r"""
    Load a saved dual encoder folder as open_clip's `(model, preprocess, tokenizer)`.

    Args:
        path (`str`): a folder `mcd eval` reads: an `MCDModel` (or `CLIPModel`, `VisionTextDualEncoderModel`) with
            its image processor and tokenizer.
        device (`str` or `torch.device`, *optional*, defaults to `"cpu"`): where the model goes; `encode_image` and
            `encode_text` move their inputs there.
        context_length (`int`, *optional*): the length every text is padded and truncated to; defaults to the
            longest text both the tokenizer and the text tower take, the truncation `mcd eval` applies.

    Returns:
        `(model, preprocess, tokenizer)`: an [`OpenCLIPModel`] in eval mode, an [`OpenCLIPPreprocess`]
        (`PIL image -> (3, H, W)`) and an [`OpenCLIPTokenizer`] (`list[str] -> LongTensor (N, context_length)`).

    Example:

    ```python
    >>> model, preprocess, tokenizer = load("runs/demo/mcd-model")
    >>> image = model.encode_image(preprocess(pil_image)[None])  # (1, projection_dim), not normalised
    >>> text = model.encode_text(tokenizer(["a photo of a cat."]))  # (1, projection_dim)
    ```
    """
    model, image_processor, tokenizer = load_dual_encoder(path, device)
    length = context_length or default_max_length(model, tokenizer)
    wrapped = OpenCLIPModel(model, tokenizer).eval()
    return wrapped, OpenCLIPPreprocess(image_processor), OpenCLIPTokenizer(tokenizer, length)


def load_for_clip_benchmark(model_name: str | None = None, pretrained: str | None = None, cache_dir: str | None = None,
                            device: str | torch.device = "cuda", **kwargs):  # fmt: skip
    """[`load`] with the signature of CLIP_benchmark's model loaders: the folder is `pretrained` (or `model_name`);
    returns `(model, preprocess, tokenizer)`."""
    folder = pretrained or model_name
    if not folder:
        raise ValueError("give the saved model folder as `pretrained` (or `model_name`)")
    return load(folder, device=device)


__all__ = [
    "OpenCLIPModel",
    "OpenCLIPPreprocess",
    "OpenCLIPTokenizer",
    "attention_mask_from_padding",
    "load",
    "load_for_clip_benchmark",
]
