"""MCDConfig: defaults describe the paper's model, sub-configs round-trip, bad values name their field."""

import math

import pytest
from conftest import comparable_config, tiny_config
from transformers import AutoConfig, BertConfig, ViTConfig

from modeling_mcd import MCDConfig


def test_default_is_vit_b32_bert_base():
    config = MCDConfig()
    assert isinstance(config.vision_config, ViTConfig)
    assert isinstance(config.text_config, BertConfig)
    assert (config.vision_config.patch_size, config.vision_config.hidden_size) == (32, 768)
    assert config.vision_config.num_hidden_layers == 12
    assert (config.text_config.hidden_size, config.text_config.vocab_size) == (768, 30522)
    assert config.projection_dim == 512
    assert config.logit_scale_init_value == pytest.approx(math.log(1 / 0.07))
    assert config.logit_scale_max == pytest.approx(math.log(100))
    assert (config.vision_pooling, config.text_pooling) == ("pooler", "pooler")


def test_from_vision_text_configs_and_dicts_without_model_type():
    config = tiny_config(projection_dim=7, text_pooling="mean")
    assert config.vision_config.hidden_size == 24 and config.text_config.hidden_size == 20
    assert config.projection_dim == 7 and config.text_pooling == "mean"
    # dicts without model_type fall back to ViT / BERT
    from_dicts = MCDConfig(vision_config={"hidden_size": 36, "image_size": 33}, text_config={"vocab_size": 99})
    assert isinstance(from_dicts.vision_config, ViTConfig) and from_dicts.vision_config.image_size == 33
    assert isinstance(from_dicts.text_config, BertConfig) and from_dicts.text_config.vocab_size == 99


def test_save_load_round_trip(tmp_path):
    config = tiny_config(projection_dim=13, vision_pooling="cls")
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, MCDConfig)
    assert comparable_config(loaded) == comparable_config(config)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"projection_dim": 0}, "projection_dim"),
        ({"projection_dim": 2.5}, "projection_dim"),
        ({"logit_scale_init_value": float("nan")}, "logit_scale_init_value"),
        ({"logit_scale_init_value": 5.0}, "logit_scale_init_value"),  # above log(100)
        ({"logit_scale_max": "big"}, "logit_scale_max"),
        ({"vision_pooling": "max"}, "vision_pooling"),
        ({"text_pooling": None}, "text_pooling"),
    ],
)
def test_invalid_values_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        MCDConfig(**kwargs)


def test_tower_without_required_fields_is_rejected():
    with pytest.raises(ValueError, match="text_config"):
        MCDConfig(text_config=ViTConfig().to_dict())  # a ViT has no vocab_size
