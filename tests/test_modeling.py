"""MCDModel: CLIPModel's surface, exact save/load, logit scale, CLIP loss, pooling, gradient checkpointing."""

import math

import pytest
import torch
from conftest import TINY_IMAGE_SIZE, comparable_config, tiny_config, tiny_tokenizer
from transformers import AutoModel, AutoModelForZeroShotImageClassification
from transformers.models.clip.modeling_clip import CLIPOutput, image_text_contrastive_loss

from modeling_mcd import MCDModel
from modeling_mcd.modeling_mcd import pool_tower_output


def _inputs(num_images=3, num_texts=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(num_images, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, generator=generator)
    text = tiny_tokenizer()(
        ["a photo of a red circle", "two blue squares", "a cat", "a big green star on the left", "this is a dog"][
            :num_texts
        ],
        padding=True,
        return_tensors="pt",
    )
    return pixel_values, text


def test_output_shapes_and_normalisation(tiny_model):
    pixel_values, text = _inputs()
    out = tiny_model(pixel_values=pixel_values, **text)
    assert isinstance(out, CLIPOutput)
    assert out.logits_per_image.shape == (3, 5) and out.logits_per_text.shape == (5, 3)
    assert out.image_embeds.shape == (3, 11) and out.text_embeds.shape == (5, 11)
    torch.testing.assert_close(out.image_embeds.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(out.text_embeds.norm(dim=-1), torch.ones(5))
    torch.testing.assert_close(out.logits_per_image, out.logits_per_text.t())
    expected = math.exp(tiny_model.config.logit_scale_init_value) * out.image_embeds @ out.text_embeds.t()
    torch.testing.assert_close(out.logits_per_image, expected)
    assert out.loss is None
    as_tuple = tiny_model(pixel_values=pixel_values, **text, return_dict=False)
    torch.testing.assert_close(as_tuple[0], out.logits_per_image)


def test_features_match_forward(tiny_model):
    pixel_values, text = _inputs()
    out = tiny_model(pixel_values=pixel_values, **text)
    image_features = tiny_model.get_image_features(pixel_values).pooler_output
    text_features = tiny_model.get_text_features(**text).pooler_output
    assert image_features.shape == (3, 11) and text_features.shape == (5, 11)
    torch.testing.assert_close(torch.nn.functional.normalize(image_features, dim=-1), out.image_embeds)
    torch.testing.assert_close(torch.nn.functional.normalize(text_features, dim=-1), out.text_embeds)


def test_token_type_and_position_ids_are_accepted(tiny_model):
    _, text = _inputs()
    base = tiny_model.get_text_features(text["input_ids"], text["attention_mask"]).pooler_output
    positions = torch.arange(text["input_ids"].shape[1]).expand_as(text["input_ids"])
    explicit = tiny_model.get_text_features(
        text["input_ids"], text["attention_mask"], position_ids=positions, token_type_ids=text["token_type_ids"]
    ).pooler_output
    torch.testing.assert_close(base, explicit)
    shifted = tiny_model.get_text_features(
        text["input_ids"], text["attention_mask"], token_type_ids=torch.ones_like(text["input_ids"])
    ).pooler_output
    assert not torch.allclose(base, shifted)


def test_logit_scale_init_and_clamp(tiny_model):
    assert tiny_model.logit_scale.item() == pytest.approx(math.log(1 / 0.07), rel=1e-6)
    # (1,) so DeepSpeed can broadcast it; the scale handed out is 0-dim like CLIP's
    assert tiny_model.logit_scale.shape == (1,) and tiny_model.get_logit_scale().dim() == 0
    with torch.no_grad():
        tiny_model.logit_scale.fill_(10.0)  # exp(10) >> 100
    assert tiny_model.get_logit_scale().item() == pytest.approx(100.0, rel=1e-5)
    pixel_values, text = _inputs()
    out = tiny_model(pixel_values=pixel_values, **text)
    torch.testing.assert_close(out.logits_per_image, 100.0 * out.image_embeds @ out.text_embeds.t())


def test_clip_loss_equals_transformers(tiny_model):
    pixel_values, text = _inputs(num_images=5, num_texts=5)
    out = tiny_model(pixel_values=pixel_values, **text, return_loss=True)
    expected = image_text_contrastive_loss(out.logits_per_text)
    torch.testing.assert_close(out.loss, expected)
    # and against a naive per-row loop
    logits = out.logits_per_text
    naive = 0.0
    for i in range(5):
        naive += -torch.log_softmax(logits[i], 0)[i] - torch.log_softmax(logits[:, i], 0)[i]
    torch.testing.assert_close(out.loss, naive / 10)


def test_save_load_gives_identical_outputs_and_config(tmp_path, tiny_model):
    pixel_values, text = _inputs()
    tiny_model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in files and not any(name.endswith(".bin") for name in files)
    for auto_class in (AutoModel, AutoModelForZeroShotImageClassification, MCDModel):
        loaded = auto_class.from_pretrained(tmp_path).eval()
        assert type(loaded) is MCDModel
        assert comparable_config(loaded.config) == comparable_config(tiny_model.config)
        a, b = tiny_model(pixel_values=pixel_values, **text), loaded(pixel_values=pixel_values, **text)
        assert torch.equal(a.logits_per_image, b.logits_per_image)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_other_poolings_drop_the_unused_pooler(pooling):
    torch.manual_seed(0)
    model = MCDModel(tiny_config(vision_pooling=pooling, text_pooling=pooling))
    assert model.vision_model.pooler is None and model.text_model.pooler is None
    pixel_values, text = _inputs()
    out = model(pixel_values=pixel_values, **text, return_loss=False)
    out.logits_per_image.sum().backward()
    # every trainable parameter gets a gradient (DDP needs no find_unused_parameters)
    assert all(p.grad is not None for p in model.parameters())


def test_mean_pooling_ignores_padding(tiny_model):
    _, text = _inputs()
    outputs = tiny_model.text_model(**text)
    pooled = pool_tower_output(outputs, "mean", text["attention_mask"])
    for row in range(pooled.shape[0]):
        length = int(text["attention_mask"][row].sum())
        torch.testing.assert_close(pooled[row], outputs.last_hidden_state[row, :length].mean(0))


def test_gradient_checkpointing_per_tower(tiny_model):
    tiny_model.train()
    tiny_model.set_tower_gradient_checkpointing(vision=True, text=False)
    assert tiny_model.vision_model.is_activation_checkpointing
    assert not tiny_model.text_model.is_activation_checkpointing
    pixel_values, text = _inputs(num_images=5, num_texts=5)
    tiny_model(pixel_values=pixel_values, **text, return_loss=True).loss.backward()
    assert tiny_model.vision_model.embeddings.patch_embeddings.projection.weight.grad is not None


def test_missing_inputs_raise(tiny_model):
    pixel_values, _ = _inputs()
    with pytest.raises(ValueError, match="input_ids"):
        tiny_model(pixel_values=pixel_values)


def test_sdpa_is_the_default_attention(tiny_model):
    assert tiny_model.vision_model.config._attn_implementation == "sdpa"
    assert tiny_model.text_model.config._attn_implementation == "sdpa"
