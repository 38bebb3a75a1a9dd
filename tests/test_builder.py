# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""modeling_mcd.builder: the tokenizer, model and image processor a run builds from its ModelArguments."""

from __future__ import annotations

import datasets
import pytest
import torch
from transformers import AutoModel, BertModel, ViTModel

from modeling_mcd.arguments import ModelArguments
from modeling_mcd.builder import build_pretraining_model, caption_corpus, load_tokenizer

from conftest import tiny_config, tiny_image_processor, tiny_tokenizer

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
    assert processor.size == {"height": 24, "width": 24}
    for teacher, student in zip(*model.teacher_student_parameters()):
        assert torch.equal(teacher, student) and not teacher.requires_grad


def test_pretrained_towers_are_loaded_from_local_folders(tmp_path):
    config = tiny_config()
    torch.manual_seed(0)
    vision, text = ViTModel(config.vision_config), BertModel(config.text_config)
    vision.save_pretrained(tmp_path / "vit")
    text.save_pretrained(tmp_path / "bert")
    tiny_image_processor().save_pretrained(tmp_path / "vit")
    args = ModelArguments(
        vision_model_name_or_path=str(tmp_path / "vit"), text_model_name_or_path=str(tmp_path / "bert")
    )
    model, _ = build_pretraining_model(args, tiny_tokenizer())
    loaded_vit = AutoModel.from_pretrained(tmp_path / "vit").state_dict()
    for name, value in model.mcd.vision_model.state_dict().items():
        torch.testing.assert_close(value, loaded_vit[name], rtol=0, atol=0, msg=name)
    torch.testing.assert_close(
        model.mcd.text_model.embeddings.word_embeddings.weight, text.embeddings.word_embeddings.weight, rtol=0, atol=0
    )


def test_one_pretrained_tower_alone_is_refused():
    with pytest.raises(ValueError, match="--vision_model_name_or_path and --text_model_name_or_path"):
        build_pretraining_model(ModelArguments(vision_model_name_or_path="some/vit"), tiny_tokenizer())


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
