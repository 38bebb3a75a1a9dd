"""The package surface: sorted public names, registration with the Auto classes (the version: test_wheel.py)."""

from transformers import AutoConfig, AutoModel, AutoModelForZeroShotImageClassification

import modeling_mcd


def test_all_is_sorted_and_importable():
    assert modeling_mcd.__all__ == sorted(modeling_mcd.__all__)
    for name in modeling_mcd.__all__:
        assert hasattr(modeling_mcd, name), name


def test_auto_classes_know_mcd():
    config = AutoConfig.for_model("mcd")
    assert type(config) is modeling_mcd.MCDConfig
    assert AutoModel._model_mapping[modeling_mcd.MCDConfig] is modeling_mcd.MCDModel
    assert AutoModelForZeroShotImageClassification._model_mapping[modeling_mcd.MCDConfig] is modeling_mcd.MCDModel
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

    assert PROCESSOR_MAPPING[modeling_mcd.MCDConfig] is modeling_mcd.MCDProcessor
