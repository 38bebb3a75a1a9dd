# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""MCDProcessor: the image processor and the tokenizer of an MCD model, saved and loaded together.

Shipped as Hub remote code next to the weights: imports transformers only.
"""

from __future__ import annotations

from transformers import ProcessorMixin


class MCDProcessor(ProcessorMixin):
    r"""
    Wraps an image processor (e.g. `ViTImageProcessor`) and a tokenizer (e.g. `BertTokenizerFast`)
    into one processor, like transformers' `VisionTextDualEncoderProcessor`.

    `processor(text=[...], images=[...], return_tensors="pt", padding=True)` returns `input_ids`,
    `attention_mask` (and `token_type_ids` for BERT) and `pixel_values`, ready for `MCDModel`.

    Args:
        image_processor (`BaseImageProcessor`): turns PIL images or arrays into `pixel_values`.
        tokenizer (`PreTrainedTokenizerBase`): turns captions into ids.
    """

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        if image_processor is None:
            raise ValueError("MCDProcessor needs an `image_processor`")
        if tokenizer is None:
            raise ValueError("MCDProcessor needs a `tokenizer`")
        super().__init__(image_processor, tokenizer)


__all__ = ["MCDProcessor"]
