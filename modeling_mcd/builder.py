# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Build what a pretraining run trains from its `ModelArguments`: the tokenizer, the `MCDForPreTraining`
model and the image processor whose normalisation the views use.

Towers come from two pretrained folders or hub ids, or are built from scratch at the sizes the arguments
give (a ViT and a BERT); a from-scratch text tower gets a WordPiece vocabulary built from the captions.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import datasets
from transformers import (
    AutoImageProcessor,
    AutoTokenizer,
    BertConfig,
    PreTrainedTokenizerBase,
    ViTConfig,
    ViTImageProcessorPil,
)
from transformers.image_processing_utils import BaseImageProcessor

from .arguments import ModelArguments
from .configuration_mcd import MCDConfig
from .modeling_mcd import MCDModel
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
    The model to pretrain and the image processor whose normalisation the views use.

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
        student = MCDModel.from_vision_text_pretrained(
            model_args.vision_model_name_or_path,
            model_args.text_model_name_or_path,
            projection_dim=model_args.projection_dim,
            vision_pooling=model_args.vision_pooling,
            text_pooling=model_args.text_pooling,
        )
        vocab_size = student.config.text_config.vocab_size
        if vocab_size < len(tokenizer):
            raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the text tower only {vocab_size}")
        model = MCDForPreTraining.from_student(student, teacher_text=teacher_text)
        image_processor = AutoImageProcessor.from_pretrained(model_args.vision_model_name_or_path)
    else:
        # `_from_config` (not the constructor) so that DeepSpeed ZeRO-3 can build the model partitioned.
        model = MCDForPreTraining._from_config(scratch_config(model_args, tokenizer), teacher_text=teacher_text)
        image_processor = ViTImageProcessorPil(
            size={"height": model_args.image_size, "width": model_args.image_size},
            image_mean=list(SCRATCH_IMAGE_MEAN),
            image_std=list(SCRATCH_IMAGE_STD),
        )
    model.mcd.set_tower_gradient_checkpointing(
        vision=model_args.gradient_checkpointing_vision, text=model_args.gradient_checkpointing_text
    )
    return model, image_processor


__all__ = ["build_pretraining_model", "caption_corpus", "load_tokenizer", "scratch_config"]
