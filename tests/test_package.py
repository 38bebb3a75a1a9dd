"""The package surface: one version string, sorted public names, registration with the Auto classes."""

import configparser
from pathlib import Path

from transformers import AutoConfig, AutoModel, AutoModelForZeroShotImageClassification

import modeling_mcd

ROOT = Path(__file__).resolve().parent.parent


def test_version_lives_in_one_place():
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    assert setup["metadata"]["version"] == "attr: modeling_mcd.__version__"
    assert modeling_mcd.__version__.count(".") == 2


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
