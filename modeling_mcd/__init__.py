# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""mcd: MCD ("Misalign, Contrast then Distill", ICCV 2023) as a native transformers model.

Importing this package registers the `mcd` model type with `AutoConfig`, `AutoModel`,
`AutoModelForZeroShotImageClassification` and `AutoProcessor`, and marks the classes so that
`save_pretrained` writes `auto_map` entries and copies the modeling code next to the weights
(`trust_remote_code=True` users need nothing installed).
"""

__version__ = "0.1.0"

from transformers import AutoConfig, AutoModel, AutoModelForZeroShotImageClassification, AutoProcessor

from .configuration_mcd import MCDConfig
from .objective import MCDLoss
from .modeling_mcd import MCDModel, MCDPreTrainedModel
from .pretraining import MCDForPreTraining, MCDPreTrainingOutput
from .processing_mcd import MCDProcessor

# The trainer, data pipeline and augmentation need the `train` extra (accelerate, datasets, kornia):
# import them from their modules, e.g. `from modeling_mcd.trainer import MCDTrainer`.

AutoConfig.register(MCDConfig.model_type, MCDConfig, exist_ok=True)
AutoModel.register(MCDConfig, MCDModel, exist_ok=True)
AutoModelForZeroShotImageClassification.register(MCDConfig, MCDModel, exist_ok=True)
AutoProcessor.register(MCDConfig, MCDProcessor, exist_ok=True)

MCDConfig.register_for_auto_class()
MCDModel.register_for_auto_class("AutoModel")
MCDProcessor.register_for_auto_class("AutoProcessor")

__all__ = sorted(
    [
        "MCDConfig",
        "MCDForPreTraining",
        "MCDLoss",
        "MCDModel",
        "MCDPreTrainedModel",
        "MCDPreTrainingOutput",
        "MCDProcessor",
        "__version__",
    ]
)
