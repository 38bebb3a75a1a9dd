# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""What leaves a run for the Hugging Face Hub.

- `push`: the exported inference folder, checked and pushed with `HfApi` (never a Trainer checkpoint).
- `model_card`: the card (huggingface_hub's `ModelCard` from `hub_cards/`), its `model-index` from the evaluations.
- `run_record`: what a run records about itself for its card: the recipe, the data, the machine.
"""

from .model_card import refresh_model_card, write_model_card
from .push import push_folder, push_model
from .run_record import TrainingRecord

__all__ = ["TrainingRecord", "push_folder", "push_model", "refresh_model_card", "write_model_card"]
