# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""modeling_mcd.trainer.builder: the tokenizer, model and image processor a run builds from its ModelArguments."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from conftest import tiny_config, tiny_tokenizer
from PIL import Image
from transformers import AutoModel, BertModel, ViTImageProcessorPil, ViTModel

from modeling_mcd.trainer.arguments import ModelArguments
from modeling_mcd.trainer.builder import (
    build_pretraining_model,
    caption_corpus,
    evaluation_image_processor,
    load_tokenizer,
)

SMALL = {
    "image_size": 24,
    "patch_size": 8,
    "vision_hidden_size": 12,
    "vision_layers": 1,
    "vision_heads": 3,
    "text_hidden_size": 10,
    "text_layers": 1,
    "text_heads": 2,
    "projection_dim": 7,
}


def test_scratch_model_has_the_asked_sizes_and_a_teacher_equal_to_the_student():
    tokenizer = tiny_tokenizer()
    model, processor = build_pretraining_model(ModelArguments(**SMALL, vision_pooling="mean"), tokenizer)
    config = model.config
    assert (config.vision_config.image_size, config.vision_config.patch_size) == (24, 8)
    assert (config.vision_config.hidden_size, config.text_config.hidden_size, config.projection_dim) == (12, 10, 7)
    assert config.text_config.vocab_size == len(tokenizer) and config.vision_pooling == "mean"
    # The evaluation view of docs/method.md §1: shorter side to 24, then a 24 x 24 centre crop (as CLIP's processor).
    assert processor.size == {"shortest_edge": 24} and processor.crop_size == {"height": 24, "width": 24}
    assert processor.do_center_crop and list(processor.image_mean) == list(processor.image_std) == [0.5] * 3
    for teacher, student in zip(*model.teacher_student_parameters()):
        assert torch.equal(teacher, student) and not teacher.requires_grad


def test_pretrained_towers_are_loaded_from_local_folders(tmp_path):
    config = tiny_config()
    torch.manual_seed(0)
    vision, text = ViTModel(config.vision_config), BertModel(config.text_config)
    vision.save_pretrained(tmp_path / "vit")
    text.save_pretrained(tmp_path / "bert")
    # The tower's own processor squashes to a square; only its normalisation is kept.
    tower_processor = ViTImageProcessorPil(size={"height": 30, "width": 30}, image_mean=[0.1, 0.2, 0.3])
    tower_processor.save_pretrained(tmp_path / "vit")
    args = ModelArguments(
        vision_model_name_or_path=str(tmp_path / "vit"), text_model_name_or_path=str(tmp_path / "bert")
    )
    model, processor = build_pretraining_model(args, tiny_tokenizer())
    assert list(processor.image_mean) == [0.1, 0.2, 0.3] and list(processor.image_std) == [0.5] * 3
    assert processor.size == {"shortest_edge": config.vision_config.image_size}
    loaded_vit = AutoModel.from_pretrained(tmp_path / "vit").state_dict()
    for name, value in model.mcd.vision_model.state_dict().items():
        torch.testing.assert_close(value, loaded_vit[name], rtol=0, atol=0, msg=name)
    torch.testing.assert_close(
        model.mcd.text_model.embeddings.word_embeddings.weight, text.embeddings.word_embeddings.weight, rtol=0, atol=0
    )


def test_a_pretrained_text_tower_goes_with_a_from_scratch_vit(tmp_path):
    # LiT's layout (docs/results.md): the text tower pretrained, the ViT built at the sizes of the flags.
    torch.manual_seed(0)
    text = BertModel(tiny_config().text_config)
    text.save_pretrained(tmp_path / "bert")
    args = ModelArguments(**SMALL, text_model_name_or_path=str(tmp_path / "bert"))
    model, processor = build_pretraining_model(args, tiny_tokenizer())
    vision = model.config.vision_config
    assert (vision.image_size, vision.patch_size, vision.hidden_size, vision.num_hidden_layers) == (24, 8, 12, 1)
    assert list(processor.image_mean) == [0.5] * 3 and processor.size == {"shortest_edge": 24}
    for name, value in model.mcd.text_model.state_dict().items():
        torch.testing.assert_close(value, text.state_dict()[name], rtol=0, atol=0, msg=name)
    for teacher, student in zip(*model.teacher_student_parameters()):
        assert torch.equal(teacher, student)


def test_from_scratch_size_flags_are_checked_only_for_the_tower_built_from_scratch(tmp_path):
    # A pretrained text tower brings its own sizes: a text width that no head count divides is not an error...
    ModelArguments(text_model_name_or_path="some/bert", text_hidden_size=10, text_heads=3)
    # ...but the ViT is still built from the flags, so its sizes are.
    with pytest.raises(ValueError, match="--vision_heads"):
        ModelArguments(text_model_name_or_path="some/bert", vision_hidden_size=10, vision_heads=3)


def test_a_built_vocabulary_is_kept_in_the_run_folder_and_reused(tmp_path):
    captions = ["a red circle", "two blue squares", "a red square on the left"]
    calls = []

    def corpus():
        calls.append(1)
        return captions

    args = ModelArguments(tokenizer_vocab_size=60)
    first = load_tokenizer(args, str(tmp_path), corpus)
    again = load_tokenizer(args, str(tmp_path), corpus)
    assert calls == [1]  # built once, then read back from output_dir/tokenizer
    assert (tmp_path / "tokenizer" / "tokenizer.json").is_file()
    assert first.get_vocab() == again.get_vocab()
    assert "red" in first.get_vocab()


def test_caption_corpus_flattens_caption_lists():
    rows = datasets.Dataset.from_dict({"caption": [["a b", "c"], ["d"]]})
    assert caption_corpus(rows) == ["a b", "c", "d"]


def test_evaluation_processor_resizes_the_shorter_side_then_centre_crops():
    """A wide image keeps its aspect ratio: reference = PIL bicubic resize of the shorter side, centre crop."""
    size, (width, height) = 12, (31, 17)
    image = Image.fromarray(np.random.RandomState(0).randint(0, 256, (height, width, 3), dtype=np.uint8))
    pixels = evaluation_image_processor(size)(images=[image], return_tensors="pt")["pixel_values"][0]
    new_width = int(size * width / height)  # transformers' shortest-edge rule: 21
    resized = np.asarray(image.resize((new_width, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    left = (new_width - size) // 2
    expected = torch.from_numpy((resized[:, left : left + size] - 0.5) / 0.5).permute(2, 0, 1)
    torch.testing.assert_close(pixels, expected, rtol=0, atol=1e-5)
    squashed = np.asarray(image.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    assert not torch.allclose(pixels, torch.from_numpy((squashed - 0.5) / 0.5).permute(2, 0, 1), atol=0.05)
    with pytest.raises(ValueError, match="image_size"):
        evaluation_image_processor(0)
