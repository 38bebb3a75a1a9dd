# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""mcd: MCD ("Misalign, Contrast then Distill", ICCV 2023) as a native transformers model.

Importing this package registers the `mcd` model type with `AutoConfig`, `AutoModel`,
`AutoModelForZeroShotImageClassification` and `AutoProcessor`, and marks the classes so that
`save_pretrained` writes `auto_map` entries and copies the modeling code next to the weights
(`trust_remote_code=True` users need nothing installed).

The package's layers, each a folder (README "Layout"):

- `configuration_mcd`, `modeling_mcd`, `processing_mcd`: the Hub remote code, self-contained;
  `conversion`, `export`, `open_clip_compat`: to and from other dual encoders;
- `objective/`: `MCDLoss` and its pure terms;
- `pretraining/`: `MCDForPreTraining`, the EMA teacher, LiT, adapters, ZeRO-3 helpers;
- `trainer/`: `MCDTrainer`, its arguments and what a run needs around it (the `train` extra);
- `data/`, `evaluation/`, `synthetic/`: the pipelines, the benchmarks, the built-in data;
- `hub/`: push, model card, run record; `cli/`: the `mcd` command.

`MCDTrainer`, `MCDTrainingArguments`, `ModelArguments` and `DataArguments` load on first use, so inference needs
neither accelerate nor datasets.
"""

__version__ = "0.1.0"

from transformers import AutoConfig, AutoModel, AutoModelForZeroShotImageClassification, AutoProcessor

from .configuration_mcd import MCDConfig
from .modeling_mcd import MCDModel, MCDPreTrainedModel
from .objective import MCDLoss
from .pretraining import MCDForPreTraining, MCDPreTrainingOutput
from .processing_mcd import MCDProcessor

#: Names that need the `train` extra (accelerate, datasets, kornia): loaded from `modeling_mcd.trainer` on first use.
_TRAINING_NAMES = ("DataArguments", "MCDTrainer", "MCDTrainingArguments", "ModelArguments")


def __getattr__(name: str):
    if name in _TRAINING_NAMES:
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
        *_TRAINING_NAMES,
    ]
)
