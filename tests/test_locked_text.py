# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""modeling_mcd.pretraining.locked_text and `--lock_text_tower` (LiT): the locked tower's features are those of a fresh
forward pass, computed once per caption, kept on disk per tower; only the projection and the image side train."""

from __future__ import annotations

import pytest
import torch
from conftest import fixed_pretraining_batch, tiny_config, tiny_tokenizer
from transformers import BertModel

from modeling_mcd.modeling_mcd import pool_tower_output
from modeling_mcd.objective.mcd_loss import MCDLoss
from modeling_mcd.pretraining.locked_text import TextFeatureMemo, text_features_file
from modeling_mcd.pretraining.model import MCDForPreTraining
from modeling_mcd.trainer.arguments import ModelArguments
from modeling_mcd.trainer.builder import build_pretraining_model

CAPTIONS = ["a photo of a red circle", "two blue squares", "a cat", "a big green star on the left", "a cat"]


def _tower(seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    return BertModel(tiny_config().text_config).eval()


def _text(captions: list[str], padding: bool | str = True, **kwargs) -> dict[str, torch.Tensor]:
    return dict(tiny_tokenizer()(captions, padding=padding, return_tensors="pt", **kwargs))


def _fresh(tower, pooling: str, text: dict[str, torch.Tensor]) -> torch.Tensor:
    """The naive reference: each caption alone, unpadded, through the tower."""
    rows = []
    for ids, mask in zip(text["input_ids"], text["attention_mask"]):
        ids = ids[mask.bool()][None]
        with torch.no_grad():
            rows.append(pool_tower_output(tower(input_ids=ids, return_dict=True), pooling, torch.ones_like(ids))[0])
    return torch.stack(rows)


@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler"])
def test_memo_equals_each_caption_alone_and_runs_each_caption_once(pooling):
    tower, memo = _tower(), TextFeatureMemo()
    first = _text(CAPTIONS)
    reference = _fresh(tower, pooling, first)
    calls = []
    tower.register_forward_hook(
        lambda module, args, kwargs, out: calls.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    got = memo.pooled(tower, pooling, first["input_ids"], first["attention_mask"], first["token_type_ids"])
    torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-6)
    assert calls == [4] and len(memo) == 4  # "a cat" twice in the batch: computed once
    # The same captions padded longer, in another order, with one new caption: only the new one runs.
    second = _text(["a cat", "two blue squares", "the dog"], padding="max_length", max_length=12)
    again = memo.pooled(tower, pooling, second["input_ids"], second["attention_mask"])
    assert calls == [4, 1] and len(memo) == 5
    torch.testing.assert_close(again[:2], got[[2, 1]], rtol=0, atol=0)
    torch.testing.assert_close(again[2:], _fresh(tower, pooling, _text(["the dog"])), rtol=1e-5, atol=1e-6)


def test_memo_file_round_trips_and_is_named_by_the_tower_and_pooling(tmp_path):
    tower, memo = _tower(), TextFeatureMemo()
    text = _text(CAPTIONS)
    expected = memo.pooled(tower, "mean", text["input_ids"], text["attention_mask"])
    path = text_features_file(tmp_path, tower, "mean")
    memo.save(path)
    assert path.is_file() and not path.with_suffix(".partial").exists()
    read = TextFeatureMemo()
    assert read.load(path) == 4
    calls = []
    tower.register_forward_hook(lambda *args: calls.append(1))
    torch.testing.assert_close(read.pooled(tower, "mean", text["input_ids"], text["attention_mask"]), expected)
    assert calls == []  # every caption came from the file
    assert text_features_file(tmp_path, tower, "cls") != path
    assert text_features_file(tmp_path, _tower(seed=1), "mean") != path
    assert text_features_file(tmp_path, _tower(seed=0), "mean") == path


def _locked(objective: str = "mcd") -> MCDForPreTraining:
    torch.manual_seed(0)
    model = MCDForPreTraining(tiny_config(), loss_fn=MCDLoss(objective, use_mlm=False))
    model.lock_text_tower()
    return model


@pytest.mark.parametrize("objective", ["clip", "mcd"])
def test_a_locked_tower_gives_the_unlocked_loss_and_trains_only_its_projection(objective):
    locked = _locked(objective)
    torch.manual_seed(0)
    reference = MCDForPreTraining(tiny_config(), loss_fn=MCDLoss(objective, use_mlm=False))
    locked.train(), reference.train()
    reference.mcd.text_model.eval()  # the locked tower never uses dropout; the reference's is switched off
    assert not locked.mcd.text_model.training and locked.mcd.vision_model.training
    batch = fixed_pretraining_batch(CAPTIONS, masked=[], seed=3)
    batch = {key: value for key, value in batch.items() if not key.startswith("mlm")}
    out, ref = locked(**batch, alpha=0.3), reference(**batch, alpha=0.3)
    torch.testing.assert_close(out.loss, ref.loss, rtol=1e-5, atol=1e-6)
    out.loss.backward()
    assert all(param.grad is None for param in locked.mcd.text_model.parameters())
    assert locked.mcd.text_projection.weight.grad.abs().sum() > 0
    assert locked.mcd.vision_model.embeddings.patch_embeddings.projection.weight.grad.abs().sum() > 0


def test_a_locked_tower_refuses_mlm_and_an_ema_text_teacher():
    model = _locked()
    model.loss_fn = MCDLoss("mcd", use_mlm=True)
    batch = fixed_pretraining_batch(CAPTIONS, masked=[(0, 1), (1, 1), (2, 1), (3, 1), (4, 1)])
    with pytest.raises(ValueError, match="--use_mlm false"):
        model(**batch)
    with pytest.raises(ValueError, match="--teacher_text stopgrad"):
        MCDForPreTraining(tiny_config(), teacher_text="ema").lock_text_tower()


def test_lock_flags_fail_at_parse_time_naming_the_flag(tmp_path):
    with pytest.raises(ValueError, match="--text_model_name_or_path"):
        ModelArguments(lock_text_tower=True)
    with pytest.raises(ValueError, match="--lock_text_tower"):
        ModelArguments(text_features_cache=str(tmp_path))
    with pytest.raises(ValueError, match="--lora_towers"):
        ModelArguments(lock_text_tower=True, text_model_name_or_path="some/bert", lora_r=2, lora_towers=["text"])
    with pytest.raises(ValueError, match="--use_mlm false"):
        build_pretraining_model(ModelArguments(lock_text_tower=True, text_model_name_or_path="x"), tiny_tokenizer())


def test_the_builder_locks_the_tower_and_reads_the_cache_back(tmp_path):
    _tower().save_pretrained(tmp_path / "bert")
    args = ModelArguments(
        text_model_name_or_path=str(tmp_path / "bert"),
        lock_text_tower=True,
        text_features_cache=str(tmp_path / "cache"),
        text_pooling="mean",
        image_size=24,
        patch_size=8,
        vision_hidden_size=12,
        vision_layers=1,
        vision_heads=3,
        projection_dim=7,
    )
    model, _ = build_pretraining_model(args, tiny_tokenizer(), use_mlm=False)
    assert model.text_memo is not None and len(model.text_memo) == 0
    assert not any(param.requires_grad for param in model.mcd.text_model.parameters())
    text = _text(CAPTIONS)
    model.text_memo.pooled(model.mcd.text_model, "mean", text["input_ids"], text["attention_mask"])
    assert model.text_memo.file == text_features_file(args.text_features_cache, model.mcd.text_model, "mean")
    model.text_memo.save()  # what run_mcd does after training: to the file the builder named
    again, _ = build_pretraining_model(args, tiny_tokenizer(), use_mlm=False)
    assert len(again.text_memo) == 4
