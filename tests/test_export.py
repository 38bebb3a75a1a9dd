"""Export to a stock transformers VisionTextDualEncoderModel: same embeddings, no custom code."""

import pytest
import torch
from conftest import TINY_IMAGE_SIZE, tiny_config, tiny_tokenizer
from transformers import AutoModel, VisionTextDualEncoderModel, VisionTextDualEncoderProcessor

from modeling_mcd import MCDModel
from modeling_mcd.export import export_to_vision_text_dual_encoder, to_vision_text_dual_encoder


def _batch():
    generator = torch.Generator().manual_seed(1)
    pixel_values = torch.randn(3, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, generator=generator)
    text = tiny_tokenizer()(
        ["a red circle", "two big blue squares on the left", "a cat"], padding=True, return_tensors="pt"
    )
    return pixel_values, text


def test_exported_folder_gives_the_same_embeddings(tiny_model_dir, tmp_path):
    out_dir = tmp_path / "vtde"
    export_to_vision_text_dual_encoder(tiny_model_dir, out_dir)
    stock = AutoModel.from_pretrained(out_dir).eval()
    assert type(stock) is VisionTextDualEncoderModel
    assert not list(out_dir.glob("*.py")), "the stock export must need no custom code"
    processor = VisionTextDualEncoderProcessor.from_pretrained(out_dir)
    assert processor.tokenizer.get_vocab() == tiny_tokenizer().get_vocab()

    original = MCDModel.from_pretrained(tiny_model_dir).eval()
    pixel_values, text = _batch()
    with torch.inference_mode():
        torch.testing.assert_close(
            stock.get_image_features(pixel_values).pooler_output,
            original.get_image_features(pixel_values).pooler_output,
        )
        torch.testing.assert_close(
            stock.get_text_features(**text).pooler_output, original.get_text_features(**text).pooler_output
        )
        torch.testing.assert_close(
            stock(pixel_values=pixel_values, **text).logits_per_image,
            original(pixel_values=pixel_values, **text).logits_per_image,
        )


def test_clamped_temperature_is_exported_clamped():
    torch.manual_seed(0)
    model = MCDModel(tiny_config()).eval()
    with torch.no_grad():
        model.logit_scale.fill_(7.0)  # above log(100): MCDModel clamps, the stock class would not
    stock = to_vision_text_dual_encoder(model)
    pixel_values, text = _batch()
    with torch.inference_mode():
        torch.testing.assert_close(
            stock(pixel_values=pixel_values, **text).logits_per_image,
            model(pixel_values=pixel_values, **text).logits_per_image,
        )


@pytest.mark.parametrize("field", ["vision_pooling", "text_pooling"])
def test_non_pooler_pooling_refuses_to_export(field):
    model = MCDModel(tiny_config(**{field: "cls"}))
    with pytest.raises(ValueError, match=field):
        to_vision_text_dual_encoder(model)


def test_mcd_export_command(tiny_model_dir, tmp_path):
    from modeling_mcd.cli.main import main

    assert main(["export", "--model", tiny_model_dir, "--output-dir", str(tmp_path / "stock")]) == 0
    assert type(AutoModel.from_pretrained(tmp_path / "stock")) is VisionTextDualEncoderModel
