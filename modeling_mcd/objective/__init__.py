# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""The MCD objective (docs/method.md §2–6): pure functions of embeddings, with no model, flag or Trainer in sight.

- `mcd_loss`: [`MCDLoss`], the whole objective over the global batch, as named terms.
- `inputs`: [`ObjectiveInputs`], the tensors it is computed from.
- `losses`: the contrastive terms (CLIP, MP-NCE), MLM and the distillation terms, each a pure function.
- `distillation`: the log-ratio regression the three distillation terms share.
- `pairs`: which rows are positives of each other (`pair_ids`).
- `distributed`: the gathers and reductions that make every term global across processes.
"""

from .inputs import ObjectiveInputs
from .mcd_loss import OBJECTIVES, MCDLoss

__all__ = ["MCDLoss", "OBJECTIVES", "ObjectiveInputs"]
