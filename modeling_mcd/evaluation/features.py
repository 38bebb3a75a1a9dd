# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Encode images and texts into L2-normalised embeddings with any CLIP-shaped dual encoder.

Works for every model with `get_image_features` / `get_text_features`: `MCDModel`, transformers'
`CLIPModel` and `VisionTextDualEncoderModel`. In transformers 5 these return a
`BaseModelOutputWithPooling` whose `pooler_output` is the projected embedding; older code returns the
tensor itself. Both are accepted.

The metrics modules take the tensors made here, so the CLI, the benchmark and the trainer share them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoImageProcessor, AutoModel, AutoProcessor, AutoTokenizer, PreTrainedTokenizerBase

#: Any of these makes a folder's tokenizer loadable (fast tokenizer, WordPiece, BPE, sentencepiece vocabularies).
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "tokenizer.model")

#: Maps a list of images to `pixel_values` (B, 3, H, W), or to a mapping holding `pixel_values`.
Preprocess = Callable[[list[Any]], "torch.Tensor | Mapping[str, torch.Tensor]"]


def _batches(items: Iterable[Any], batch_size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while batch := list(islice(iterator, batch_size)):
        yield batch


def _embedding(output: Any, method: str) -> torch.Tensor:
    """The projected embedding of a `get_*_features` output: a tensor, or a model output's `pooler_output`."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None:
        raise ValueError(f"model.{method} returned {type(output).__name__} without a `pooler_output` tensor")
    return pooled


def _prepare(model: nn.Module, device: str | torch.device | None) -> torch.device:
    """Put `model` on `device` (defaults to where it already is) and return that device."""
    if device is not None:
        model.to(device)
    return next(model.parameters()).device


class _EvalMode:
    """Run the model in eval mode and give the caller's mode back afterwards (the trainer evaluates mid-run)."""

    def __init__(self, model: nn.Module):
        self.model, self.was_training = model, model.training

    def __enter__(self) -> None:
        self.model.eval()

    def __exit__(self, *exc) -> None:
        self.model.train(self.was_training)


def _to_rgb(image: Any) -> Any:
    # Grayscale / RGBA / palette files are common in scraped data; image processors expect 3 channels.
    if hasattr(image, "convert") and getattr(image, "mode", "RGB") != "RGB":
        return image.convert("RGB")
    return image


def encode_images(
    model: nn.Module,
    images: Iterable[Any],
    preprocess: Preprocess,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> torch.Tensor:
    r"""
    Embed images with `model.get_image_features`, batch by batch, under `torch.inference_mode()`.

    Args:
        model (`nn.Module`): any model with `get_image_features(pixel_values=...)`.
        images (iterable): PIL images (converted to RGB), a `datasets` image column, or whatever
            `preprocess` accepts (the trainer passes uint8 tensors).
        preprocess (`Callable`): maps a list of images to `pixel_values` (B, 3, H, W), or to a mapping with
            a `pixel_values` key (e.g. `functools.partial(image_processor, return_tensors="pt")`).
        batch_size (`int`, *optional*, defaults to 64)
        device (`str` or `torch.device`, *optional*): the model is moved there first; defaults to the
            model's device.
        progress (`bool`, *optional*, defaults to `True`): show a tqdm bar.

    Returns:
        `torch.FloatTensor` of shape `(N, projection_dim)`: L2-normalised, float32, on CPU.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = _prepare(model, device)
    dtype = next(model.parameters()).dtype  # bf16 / fp16 models take pixels in their own dtype
    total = len(images) if hasattr(images, "__len__") else None
    chunks = []
    with _EvalMode(model), torch.inference_mode(), tqdm(total=total, desc="images", disable=not progress) as bar:
        for batch in _batches(images, batch_size):
            pixel_values = preprocess([_to_rgb(image) for image in batch])
            if isinstance(pixel_values, Mapping):
                pixel_values = pixel_values["pixel_values"]
            pixel_values = torch.as_tensor(pixel_values).to(device=device, dtype=dtype)  # (B, 3, H, W)
            features = _embedding(model.get_image_features(pixel_values=pixel_values), "get_image_features")
            chunks.append(nn.functional.normalize(features.float(), dim=-1).cpu())  # (B, P)
            bar.update(len(batch))
    if not chunks:
        raise ValueError("encode_images got no images")
    return torch.cat(chunks)


def default_max_length(model: nn.Module, tokenizer: PreTrainedTokenizerBase) -> int:
    """The longest text both the tokenizer and the text tower's position table accept.

    Tokenizers built from a bare vocab file report a huge `model_max_length`, so the tower's
    `max_position_embeddings` is the real limit.
    """
    limits = [tokenizer.model_max_length]
    text_config = getattr(model.config, "text_config", None)
    if text_config is not None and getattr(text_config, "max_position_embeddings", None):
        limits.append(text_config.max_position_embeddings)
    return int(min(limits))


def encode_texts(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    batch_size: int = 256,
    device: str | torch.device | None = None,
    max_length: int | None = None,
    progress: bool = True,
) -> torch.Tensor:
    r"""
    Embed texts with `model.get_text_features`, batch by batch, under `torch.inference_mode()`.

    Args:
        model (`nn.Module`): any model with `get_text_features(input_ids=..., attention_mask=...)`.
        tokenizer (`PreTrainedTokenizerBase`): the model's tokenizer.
        texts (`Sequence[str]`): the texts.
        batch_size (`int`, *optional*, defaults to 256)
        device (`str` or `torch.device`, *optional*): the model is moved there first; defaults to the
            model's device.
        max_length (`int`, *optional*): truncation length; defaults to [`default_max_length`].
        progress (`bool`, *optional*, defaults to `True`): show a tqdm bar.

    Returns:
        `torch.FloatTensor` of shape `(T, projection_dim)`: L2-normalised, float32, on CPU.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"encode_texts: text {index} is a {type(text).__name__}, not a str")
    device = _prepare(model, device)
    max_length = max_length or default_max_length(model, tokenizer)
    # CLIPModel takes no `token_type_ids`; pass only the tokenizer outputs the model names.
    accepted = set(inspect.signature(model.get_text_features).parameters)
    chunks = []
    with _EvalMode(model), torch.inference_mode():
        for batch in tqdm(list(_batches(texts, batch_size)), desc="texts", disable=not progress):
            tokens = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            inputs = {key: value.to(device) for key, value in tokens.items() if key in accepted}
            features = _embedding(model.get_text_features(**inputs), "get_text_features")
            chunks.append(nn.functional.normalize(features.float(), dim=-1).cpu())  # (B, P)
    if not chunks:
        raise ValueError("encode_texts got no texts")
    return torch.cat(chunks)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """`AutoTokenizer.from_pretrained(path)`; a local folder without any tokenizer file is a `ValueError` that says so
    (transformers' own error asks to install sentencepiece, which would not help)."""
    folder = Path(path)
    if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(
            f"{path} has no tokenizer files ({', '.join(TOKENIZER_FILES)}): save the tokenizer with the model "
            "(processor.save_pretrained or tokenizer.save_pretrained into the folder)"
        )
    return AutoTokenizer.from_pretrained(path)


def load_dual_encoder(path: str, device: str | torch.device | None = None) -> tuple[nn.Module, Any, Any]:
    r"""
    Load a dual encoder, its image processor and its tokenizer from a local folder, with the Auto classes.

    Works for a saved `MCDModel` (importing `modeling_mcd` registers it), `CLIPModel` and
    `VisionTextDualEncoderModel`, with safetensors weights (a folder with only `pytorch_model.bin` is refused).
    The processor is read with `AutoProcessor`; folders without a processor config fall back to
    `AutoImageProcessor` + `AutoTokenizer`.

    Args:
        path (`str`): the model folder.
        device (`str` or `torch.device`, *optional*): where to put the model.

    Returns:
        `(model, image_processor, tokenizer)`, the model in eval mode.
    """
    model = AutoModel.from_pretrained(path, use_safetensors=True)  # never a pickled pytorch_model.bin
    for method in ("get_image_features", "get_text_features"):
        if not hasattr(model, method):
            raise ValueError(f"{path}: {type(model).__name__} has no `{method}`; a dual encoder is needed")
    try:
        processor = AutoProcessor.from_pretrained(path)
        image_processor, tokenizer = processor.image_processor, processor.tokenizer
    except (OSError, ValueError, AttributeError, TypeError):
        image_processor = AutoImageProcessor.from_pretrained(path)
        tokenizer = load_tokenizer(path)
    if device is not None:
        model.to(device)
    return model.eval(), image_processor, tokenizer


def load_model_and_processor(
    path: str, device: str | torch.device | None = None
) -> tuple[nn.Module, Preprocess, PreTrainedTokenizerBase]:
    r"""
    Load a dual encoder and its preprocessing from a local folder ([`load_dual_encoder`]).

    Args:
        path (`str`): the model folder.
        device (`str` or `torch.device`, *optional*): where to put the model.

    Returns:
        `(model, preprocess, tokenizer)`: the model in eval mode, a callable mapping a list of images to
        `pixel_values`, and the tokenizer.
    """
    model, image_processor, tokenizer = load_dual_encoder(path, device)

    def preprocess(images: list[Any]) -> torch.Tensor:
        return image_processor(images=images, return_tensors="pt")["pixel_values"]

    return model, preprocess, tokenizer


__all__ = [
    "TOKENIZER_FILES",
    "default_max_length",
    "encode_images",
    "encode_texts",
    "load_dual_encoder",
    "load_model_and_processor",
    "load_tokenizer",
]
