# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""DeepSpeed ZeRO-3: writing into, and reading out, a model whose every weight is partitioned across processes.

Under ZeRO-3 each process holds a shard of every parameter (`param.ds_tensor`) and an empty `param.data`; these
helpers gather them whole where MCD needs whole weights (loading pretrained towers, exporting the student). Without
DeepSpeed they do nothing or return the model itself. Both are collectives: every process must call them.
"""

from __future__ import annotations

import contextlib

from torch import nn

from ..modeling_mcd import MCDModel


def is_partitioned(params) -> bool:
    """Whether any of `params` is a ZeRO-3 partitioned parameter."""
    return any(hasattr(param, "ds_id") for param in params)


def gathered_for_writing(params: list[nn.Parameter]):
    """Under ZeRO-3: the parameters gathered whole, rank 0's writes partitioned again on exit. Otherwise nothing."""
    if not is_partitioned(params):
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=0)


def whole_copy(model: MCDModel) -> MCDModel:
    """A new, whole `MCDModel` on every process with the weights of a partitioned one, in the precision they trained in
    (bf16 under DeepSpeed bf16, as ZeRO-2 and plain runs export it)."""
    import deepspeed
    from transformers.modeling_utils import set_zero3_state

    with deepspeed.zero.GatheredParameters(list(model.parameters())):
        state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    with set_zero3_state():  # marks zero.Init as already active, so the towers are built whole
        whole = MCDModel(model.config)
    whole.to(state["logit_scale"].dtype).load_state_dict(state)
    return whole


__all__ = ["gathered_for_writing", "is_partitioned", "whole_copy"]
