# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Build what a pretraining run trains from its `ModelArguments`: the tokenizer, the `MCDForPreTraining`
model and the image processor: the evaluation view of docs/method.md §1, whose normalisation the training
views also use, and which is saved with the model.

Each tower comes from a pretrained folder or hub id, or is built from scratch at the sizes the arguments give (a ViT,
a BERT); a from-scratch text tower gets a WordPiece vocabulary built from the captions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
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

from ..configuration_mcd import MCDConfig
from ..conversion import load_dual_encoder
from ..modeling_mcd import load_pretrained_tower
from ..pretraining.locked_text import text_features_file
from ..pretraining.model import MCDForPreTraining
from .arguments import ModelArguments
from .fingerprint import VOCABULARY_RECORD_NAME, describe_data, read_json, write_json
from .peft_configs import build_peft_config
from .wordpiece import train_wordpiece_tokenizer

logger = logging.getLogger(__name__)

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
    model_args: ModelArguments,
    output_dir: str,
    captions: Callable[[], Iterable[str]],
    data_fingerprint: dict | None = None,
    resuming: bool = False,
) -> PreTrainedTokenizerBase:
    r"""
    The run's tokenizer: `--tokenizer_name_or_path`, else the text tower's (or `--init_model_name_or_path`'s), else a
    WordPiece vocabulary built from `captions()` and kept in `output_dir/tokenizer`, so every process and a resumed
    run use the same one.

    A kept vocabulary records what it was built from (`mcd_vocabulary.json`: the data's fingerprint, the vocabulary
    size asked for). A run that resumes a checkpoint uses the kept vocabulary, the one its weights were trained with;
    a run that starts afresh on other data or with another `--tokenizer_vocab_size` rebuilds it, and says so, instead
    of training on another run's vocabulary.

    Args:
        model_args (`ModelArguments`)
        output_dir (`str`): the run folder.
        captions (`Callable`): returns the training captions; only called when a vocabulary is built.
        data_fingerprint (`dict`, *optional*): the training data's
            (`modeling_mcd.trainer.fingerprint.data_fingerprint`).
        resuming (`bool`, *optional*, defaults to `False`): whether the run resumes a checkpoint of `output_dir`.
    """
    source = (
        model_args.tokenizer_name_or_path or model_args.text_model_name_or_path or model_args.init_model_name_or_path
    )
    if source:
        return AutoTokenizer.from_pretrained(source)
    tokenizer_dir = os.path.join(output_dir, "tokenizer")
    wanted = {"data": data_fingerprint, "vocab_size": model_args.tokenizer_vocab_size}
    if os.path.isfile(os.path.join(tokenizer_dir, "tokenizer.json")):
        kept = read_json(tokenizer_dir, VOCABULARY_RECORD_NAME)
        if resuming or kept == wanted or (kept is None and data_fingerprint is None):
            if kept is not None and kept != wanted:
                logger.warning("%s was built from other data; the resumed checkpoint was trained on it", tokenizer_dir)
            return AutoTokenizer.from_pretrained(tokenizer_dir)
        built_from = "another run" if kept is None else f"{describe_data(kept['data'])}, size {kept['vocab_size']}"
        logger.warning(
            "rebuilding the vocabulary in %s: it was built from %s; this run trains on %s, --tokenizer_vocab_size %d",
            tokenizer_dir,
            built_from,
            describe_data(data_fingerprint),
            model_args.tokenizer_vocab_size,
        )
    tokenizer = train_wordpiece_tokenizer(captions(), vocab_size=model_args.tokenizer_vocab_size)
    if os.path.isdir(tokenizer_dir):
        shutil.rmtree(tokenizer_dir)  # no file of the old vocabulary may outlive it
    tokenizer.save_pretrained(tokenizer_dir)
    write_json(tokenizer_dir, VOCABULARY_RECORD_NAME, wanted)
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


def scratch_vision_config(model_args: ModelArguments) -> ViTConfig:
    """The config of a ViT built from scratch at the sizes in `model_args`."""
    return ViTConfig(
        image_size=model_args.image_size,
        patch_size=model_args.patch_size,
        hidden_size=model_args.vision_hidden_size,
        num_hidden_layers=model_args.vision_layers,
        num_attention_heads=model_args.vision_heads,
        intermediate_size=4 * model_args.vision_hidden_size,
    )


def scratch_text_config(model_args: ModelArguments, tokenizer: PreTrainedTokenizerBase) -> BertConfig:
    """The config of a BERT built from scratch at the sizes in `model_args`, with the tokenizer's vocabulary."""
    return BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=model_args.text_hidden_size,
        num_hidden_layers=model_args.text_layers,
        num_attention_heads=model_args.text_heads,
        intermediate_size=4 * model_args.text_hidden_size,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_pretraining_model(
    model_args: ModelArguments,
    tokenizer: PreTrainedTokenizerBase,
    teacher_text: str = "stopgrad",
    use_mlm: bool = True,
) -> tuple[MCDForPreTraining, BaseImageProcessor]:
    r"""
    The model to train and its image processor ([`evaluation_image_processor`] at the vision tower's image size; a
    pretrained model's or tower's own processor gives the mean and std). With `--lora_r` or `--peft_config`, the
    student gets adapters once its starting weights are in (`modeling_mcd.pretraining.adapters`).

    Args:
        model_args (`ModelArguments`): `--init_model_name_or_path` (a pretrained dual encoder, see
            `modeling_mcd.conversion`), or `--vision_model_name_or_path` and/or `--text_model_name_or_path`
            (pretrained towers; a tower not given is built from scratch), or none of them (from scratch); the
            adapter flags; `--lock_text_tower` (LiT, `modeling_mcd.pretraining.locked_text`).
        tokenizer (`PreTrainedTokenizerBase`): the run's tokenizer; a from-scratch text tower gets its vocabulary
            size.
        teacher_text (`str`, *optional*, defaults to `"stopgrad"`): see `MCDForPreTraining`.
        use_mlm (`bool`, *optional*, defaults to `True`): whether the objective masks captions (`--use_mlm`), which
            needs a tokenizer with a mask token.

    Returns:
        `(MCDForPreTraining, image processor)`
    """
    if use_mlm and getattr(tokenizer, "mask_token", None) is None:
        raise ValueError(
            f"--use_mlm true masks caption tokens, but the tokenizer ({type(tokenizer).__name__}) has no mask token, "
            "as CLIP's has none: pass --use_mlm false"
        )
    if model_args.lock_text_tower and use_mlm:
        raise ValueError("--lock_text_tower needs --use_mlm false: MLM trains the text tower, which is locked")
    if model_args.init_model_name_or_path:
        with _whole_models():
            student = load_dual_encoder(model_args.init_model_name_or_path)
        _check_vocabulary(student.config.text_config, tokenizer)
        model = MCDForPreTraining.from_student(student, teacher_text=teacher_text)
        image_processor = _evaluation_processor_of(
            model_args.init_model_name_or_path, student.config.vision_config.image_size
        )
    else:
        # Each tower pretrained or built from scratch at the sizes the flags give (LiT: a pretrained text tower, locked
        # with --lock_text_tower, and a ViT from scratch). `_from_config` (not the constructor) so that DeepSpeed
        # ZeRO-3 builds the model partitioned; pretrained weights are copied in after.
        vision_path, text_path = model_args.vision_model_name_or_path, model_args.text_model_name_or_path
        with _whole_models():  # loaded whole on every process, then copied into the (maybe partitioned) model
            vision = load_pretrained_tower(vision_path, "vision") if vision_path else None
            text = load_pretrained_tower(text_path, "text") if text_path else None
        if text is not None:
            _check_vocabulary(text.config, tokenizer)
        config = MCDConfig.from_vision_text_configs(
            vision.config if vision is not None else scratch_vision_config(model_args),
            text.config if text is not None else scratch_text_config(model_args, tokenizer),
            projection_dim=model_args.projection_dim,
            vision_pooling=model_args.vision_pooling,
            text_pooling=model_args.text_pooling,
        )
        model = MCDForPreTraining._from_config(config, teacher_text=teacher_text)
        if vision is not None or text is not None:
            model.load_tower_weights(vision, text)
        image_size = config.vision_config.image_size
        image_processor = (
            _evaluation_processor_of(vision_path, image_size)
            if vision_path
            else evaluation_image_processor(image_size, SCRATCH_IMAGE_MEAN, SCRATCH_IMAGE_STD)
        )
    model.mcd.set_tower_gradient_checkpointing(
        vision=model_args.gradient_checkpointing_vision, text=model_args.gradient_checkpointing_text
    )
    if model_args.lock_text_tower:
        model.lock_text_tower()
        if model_args.text_features_cache:  # the memo's file, read now if there, written after training
            memo = model.text_memo
            memo.file = text_features_file(
                model_args.text_features_cache, model.mcd.text_model, model.config.text_pooling
            )
            if memo.file.is_file():
                logger.info("--text_features_cache: %d caption features read from %s", memo.load(memo.file), memo.file)
    peft_config = build_peft_config(model_args, model.mcd)
    if peft_config is not None:
        model.add_adapters(peft_config)
    return model, image_processor


def _check_vocabulary(text_config, tokenizer: PreTrainedTokenizerBase) -> None:
    if text_config.vocab_size < len(tokenizer):
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the text tower only {text_config.vocab_size}")


def _evaluation_processor_of(source: str, image_size: int) -> BaseImageProcessor:
    """[`evaluation_image_processor`] with the normalisation of `source`'s own image processor; only its mean and std
    are kept, as it may squash images to a square."""
    own = AutoImageProcessor.from_pretrained(source)
    return evaluation_image_processor(image_size, own.image_mean, own.image_std)


__all__ = [
    "build_pretraining_model",
    "caption_corpus",
    "evaluation_image_processor",
    "load_tokenizer",
    "scratch_text_config",
    "scratch_vision_config",
]
