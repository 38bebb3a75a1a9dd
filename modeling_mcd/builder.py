# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Build what a pretraining run trains from its `ModelArguments`: the tokenizer, the `MCDForPreTraining`
model and the image processor: the evaluation view of docs/method.md §1, whose normalisation the training
views also use, and which is saved with the model.

Towers come from two pretrained folders or hub ids, or are built from scratch at the sizes the arguments
give (a ViT and a BERT); a from-scratch text tower gets a WordPiece vocabulary built from the captions.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Sequence

import datasets
from transformers import (
    AutoImageProcessor,
    AutoTokenizer,
    BertConfig,
    CLIPImageProcessor,
    CLIPImageProcessorPil,
    PreTrainedTokenizerBase,
    ViTConfig,
)
from transformers.image_processing_utils import BaseImageProcessor
from transformers.image_utils import PILImageResampling
from transformers.utils import is_torchvision_available

from .arguments import ModelArguments
from .configuration_mcd import MCDConfig
from .modeling_mcd import load_pretrained_towers
from .pretraining import MCDForPreTraining
from .wordpiece import train_wordpiece_tokenizer

#: Normalisation of from-scratch image towers (maps [0, 1] to [-1, 1], as ViT's processors do).
SCRATCH_IMAGE_MEAN = SCRATCH_IMAGE_STD = (0.5, 0.5, 0.5)


def caption_corpus(dataset: datasets.Dataset) -> list[str]:
    """Every caption of a (small) dataset with a `caption` column, lists of captions flattened."""
    if isinstance(dataset, datasets.IterableDataset):
        raise ValueError("building a vocabulary needs a non-streaming dataset; pass --tokenizer_name_or_path")
    texts: list[str] = []
    for value in dataset["caption"]:
        texts.extend(value if isinstance(value, list) else [value])
    return [text for text in texts if isinstance(text, str)]


def load_tokenizer(
    model_args: ModelArguments, output_dir: str, captions: Callable[[], Iterable[str]]
) -> PreTrainedTokenizerBase:
    r"""
    The run's tokenizer: `--tokenizer_name_or_path`, else the text tower's, else a WordPiece vocabulary built
    from `captions()` and kept in `output_dir/tokenizer`, so every process and a resumed run use the same one.

    Args:
        model_args (`ModelArguments`)
        output_dir (`str`): the run folder.
        captions (`Callable`): returns the training captions; only called when a vocabulary is built.
    """
    source = model_args.tokenizer_name_or_path or model_args.text_model_name_or_path
    if source:
        return AutoTokenizer.from_pretrained(source)
    tokenizer_dir = os.path.join(output_dir, "tokenizer")
    if os.path.isfile(os.path.join(tokenizer_dir, "tokenizer.json")):
        return AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer = train_wordpiece_tokenizer(captions(), vocab_size=model_args.tokenizer_vocab_size)
    tokenizer.save_pretrained(tokenizer_dir)
    return tokenizer


def evaluation_image_processor(
    image_size: int,
    image_mean: Sequence[float] = SCRATCH_IMAGE_MEAN,
    image_std: Sequence[float] = SCRATCH_IMAGE_STD,
) -> BaseImageProcessor:
    r"""
    The evaluation view of docs/method.md §1 as a transformers image processor, the ONE object a run evaluates
    with during training and saves with the model (so `mcd eval` and the zero-shot pipeline apply it too):
    convert to RGB, resize the shorter side to `image_size` (bicubic), centre-crop `image_size` x `image_size`,
    rescale to [0, 1] and normalise, exactly as CLIP's processor does. A non-square image keeps its aspect ratio.

    The backend is the one `AutoImageProcessor` picks when it loads the saved folder on this machine
    (torchvision when installed, else PIL), so the run's own evaluation and a reload compute the same pixels.

    Args:
        image_size (`int`): the vision tower's `image_size` S.
        image_mean (`Sequence[float]`, *optional*, defaults to 0.5 per channel): per-channel mean.
        image_std (`Sequence[float]`, *optional*, defaults to 0.5 per channel): per-channel std.

    Returns:
        `CLIPImageProcessor` (torchvision backend) or `CLIPImageProcessorPil`.
    """
    if not isinstance(image_size, int) or image_size <= 0:
        raise ValueError(f"image_size must be a positive int (the vision tower's), got {image_size!r}")
    processor_class = CLIPImageProcessor if is_torchvision_available() else CLIPImageProcessorPil
    return processor_class(
        do_resize=True,
        size={"shortest_edge": image_size},
        resample=PILImageResampling.BICUBIC,
        do_center_crop=True,
        crop_size={"height": image_size, "width": image_size},
        do_convert_rgb=True,
        image_mean=list(image_mean),
        image_std=list(image_std),
    )


def _whole_models():
    """Under DeepSpeed ZeRO-3, transformers builds every model partitioned; the pretrained towers are loaded whole
    instead (`set_zero3_state` tells it partitioning is already taken care of), to be copied into the model."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if not is_deepspeed_zero3_enabled():
        return contextlib.nullcontext()
    from transformers.modeling_utils import set_zero3_state

    return set_zero3_state()


def scratch_config(model_args: ModelArguments, tokenizer: PreTrainedTokenizerBase) -> MCDConfig:
    """The `MCDConfig` of a ViT + BERT built from scratch at the sizes in `model_args`."""
    vision = ViTConfig(
        image_size=model_args.image_size,
        patch_size=model_args.patch_size,
        hidden_size=model_args.vision_hidden_size,
        num_hidden_layers=model_args.vision_layers,
        num_attention_heads=model_args.vision_heads,
        intermediate_size=4 * model_args.vision_hidden_size,
    )
    text = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=model_args.text_hidden_size,
        num_hidden_layers=model_args.text_layers,
        num_attention_heads=model_args.text_heads,
        intermediate_size=4 * model_args.text_hidden_size,
        pad_token_id=tokenizer.pad_token_id,
    )
    return MCDConfig.from_vision_text_configs(
        vision,
        text,
        projection_dim=model_args.projection_dim,
        vision_pooling=model_args.vision_pooling,
        text_pooling=model_args.text_pooling,
    )


def build_pretraining_model(
    model_args: ModelArguments, tokenizer: PreTrainedTokenizerBase, teacher_text: str = "stopgrad"
) -> tuple[MCDForPreTraining, BaseImageProcessor]:
    r"""
    The model to pretrain and its image processor ([`evaluation_image_processor`] at the vision tower's image
    size; a pretrained tower's own processor gives the mean and std).

    Args:
        model_args (`ModelArguments`): both `--vision_model_name_or_path` and `--text_model_name_or_path`
            (pretrained towers), or neither (from scratch).
        tokenizer (`PreTrainedTokenizerBase`): the run's tokenizer; a from-scratch text tower gets its vocabulary
            size.
        teacher_text (`str`, *optional*, defaults to `"stopgrad"`): see `MCDForPreTraining`.

    Returns:
        `(MCDForPreTraining, image processor)`
    """
    if bool(model_args.vision_model_name_or_path) != bool(model_args.text_model_name_or_path):
        raise ValueError("give both --vision_model_name_or_path and --text_model_name_or_path, or neither")
    if model_args.vision_model_name_or_path:
        with _whole_models():  # loaded whole on every process, then copied into the (maybe partitioned) model
            vision, text = load_pretrained_towers(
                model_args.vision_model_name_or_path, model_args.text_model_name_or_path
            )
        if text.config.vocab_size < len(tokenizer):
            raise ValueError(
                f"the tokenizer has {len(tokenizer)} tokens but the text tower only {text.config.vocab_size}"
            )
        config = MCDConfig.from_vision_text_configs(
            vision.config,
            text.config,
            projection_dim=model_args.projection_dim,
            vision_pooling=model_args.vision_pooling,
            text_pooling=model_args.text_pooling,
        )
        # Built like a from-scratch model (partitioned while constructed under ZeRO-3), then given the towers' weights.
        model = MCDForPreTraining._from_config(config, teacher_text=teacher_text)
        model.load_tower_weights(vision, text)
        # The tower's own processor may squash images to a square: only its normalisation is kept.
        tower_processor = AutoImageProcessor.from_pretrained(model_args.vision_model_name_or_path)
        image_processor = evaluation_image_processor(
            config.vision_config.image_size, tower_processor.image_mean, tower_processor.image_std
        )
    else:
        # `_from_config` (not the constructor) so that DeepSpeed ZeRO-3 can build the model partitioned.
        model = MCDForPreTraining._from_config(scratch_config(model_args, tokenizer), teacher_text=teacher_text)
        image_processor = evaluation_image_processor(model_args.image_size, SCRATCH_IMAGE_MEAN, SCRATCH_IMAGE_STD)
    model.mcd.set_tower_gradient_checkpointing(
        vision=model_args.gradient_checkpointing_vision, text=model_args.gradient_checkpointing_text
    )
    return model, image_processor


__all__ = [
    "build_pretraining_model",
    "caption_corpus",
    "evaluation_image_processor",
    "load_tokenizer",
    "scratch_config",
]
