# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""The model MCD trains: [`MCDForPreTraining`], the student `MCDModel` + an MLM head + the EMA teacher.

- `model`: `MCDForPreTraining` and its output.
- `teacher`: the EMA update and the momentum schedule (docs/method.md §5).
- `locked_text`: LiT, a locked text tower whose features are computed once per caption.
- `adapters`: peft adapters on the student and the weights W + ΔW its teacher follows.
- `zero3`: gathering and writing weights that DeepSpeed ZeRO-3 partitions.

Nothing here reads a flag or knows the Trainer: `modeling_mcd.trainer` builds this model from the flags.
"""

from .model import TEACHER_TEXT_CHOICES, MCDForPreTraining, MCDPreTrainingOutput

__all__ = ["TEACHER_TEXT_CHOICES", "MCDForPreTraining", "MCDPreTrainingOutput"]
