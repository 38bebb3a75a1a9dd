# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Contrastive-correct gradient accumulation: a feature cache (GradCache, open_clip's `--accum-freq`), extended to
MCD's teacher embeddings and MLM.

Accumulating k micro-batches the usual way is NOT the objective at the k-times larger batch: each micro-batch would
contrast against its own negatives only, and MP-NCE and the log-ratio terms do not add up over micro-batches. With
the cache, an optimizer step over k micro-batches of B rows (on each of W processes) computes exactly the objective
of one global batch of k·W·B rows:

1. **First pass, no gradient** (`fill_feature_cache`): every micro-batch runs through the model in training mode;
   its student embeddings u, ũ, v, its teacher embeddings ū, ū̃ (, v̄) are gathered across processes and cached,
   with the RNG state its forward started from, and the masked tokens of the whole step are counted.
2. **Replay** (`FeatureCache.global_inputs`): each micro-batch runs again with gradients, from the same RNG
   state (so the same dropout; the views and MLM masks are functions of the sample and the step already). Its
   fresh embeddings, gathered with gradient, replace its block of the cache, and the objective is computed over
   the whole cached global batch. Only that block carries gradient, and the learnable temperature only in the last
   replay, so the gradients summed over the k replays are exactly those of one pass over the whole batch. MLM is a
   per-token sum: each replay adds its own tokens, normalised by the step's total count.

With the local loss (`--local_loss`), each process's anchors in every replay are its own rows of ALL k micro-batches
(`FeatureCache.local_rows`), against every cached row: the anchors of the W processes partition the step's rows, so
each replay still has the whole objective's value and, after DDP's average, its gradient through the fresh block.

The loss of every replay has the value and gradient of the whole objective; `MCDTrainer` reports a k-th of the
shared terms per replay, so the step's logged loss is the objective's value.

Cost: every sample goes forward through the student twice (once without gradient): with a backward worth about
two forwards, a step costs about 4/3 of the student's arithmetic of one pass at the same batch; the teacher runs
once. The memory is that of one micro-batch plus the cached embeddings (a few vectors per sample).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..objective.distributed import gather_no_grad, gather_with_grad, world_info
from ..objective.inputs import STUDENT_FIELDS, TEACHER_FIELDS, ObjectiveInputs
from ..objective.mcd_loss import count_masked_tokens


def rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The CPU generator's state and, for an accelerator, that device's (dropout draws from the latter)."""
    if device.type == "cpu":
        return torch.get_rng_state(), None
    return torch.get_rng_state(), torch.get_device_module(device.type).get_rng_state(device)


def set_rng_state(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
    """Restore a state from `rng_state`."""
    cpu, accelerator = state
    torch.set_rng_state(cpu)
    if accelerator is not None:
        torch.get_device_module(device.type).set_rng_state(accelerator, device)


@dataclass
class FeatureCache:
    r"""
    The embeddings of every micro-batch of one optimizer step, gathered across processes.

    Args:
        blocks (`list[dict]`): per micro-batch, each field of `STUDENT_FIELDS` and `TEACHER_FIELDS` as a GLOBAL
            `(W·B, P)` tensor without gradient (or `None` when the objective does not use it).
        rng_states (`list`): per micro-batch, the RNG state its first-pass forward started from.
        mlm_count (`torch.Tensor`, *optional*): masked tokens in the whole step, over every process.
        pair_ids (`torch.Tensor`, *optional*): `(k·W·B,)` the pair id of every row of the step (the batches'
            `pair_ids`, gathered in the order of the embeddings), for the loss; `None` when the batches hold none.
    """

    blocks: list[dict[str, torch.Tensor | None]] = field(default_factory=list)
    rng_states: list[tuple[torch.Tensor, torch.Tensor | None]] = field(default_factory=list)
    mlm_count: torch.Tensor | None = None
    pair_ids: torch.Tensor | None = None

    @property
    def num_micro_batches(self) -> int:
        return len(self.blocks)

    def local_rows(self, device: torch.device) -> torch.Tensor:
        r"""
        This process's rows among the cached rows of the step: its anchors with the local loss (`MCDLoss.terms`).

        Returns:
            `(k·B,)` long: row `j·W·B + r·B + b` for micro-batch j, this process's rank r and each local row b (the
            cache holds micro-batch after micro-batch, each gathered in rank order).
        """
        rank, world_size = world_info()
        block = self.blocks[0]["image_embeds"].shape[0]  # W·B rows per micro-batch
        rows = block // world_size
        starts = torch.arange(self.num_micro_batches, device=device) * block + rank * rows  # (k,)
        return (starts[:, None] + torch.arange(rows, device=device)).flatten()  # (k·B,)

    def global_inputs(self, index: int, fresh: ObjectiveInputs) -> ObjectiveInputs:
        r"""
        The whole step's objective inputs, with micro-batch `index`'s student embeddings replaced by `fresh`'s (this
        process's LOCAL rows, with gradient), gathered with gradient.

        Returns:
            [`ObjectiveInputs`]: `(k·W·B, P)` embeddings (`None` where the objective does not use one), the step's
            `pair_ids`, and `fresh`'s logit scale and (local) MLM logits and labels.
        """
        if not 0 <= index < self.num_micro_batches:
            raise IndexError(f"micro-batch {index} of a step with {self.num_micro_batches}")
        embeddings: dict[str, torch.Tensor | None] = {}
        for name in (*STUDENT_FIELDS, *TEACHER_FIELDS):
            cached = [block[name] for block in self.blocks]
            if cached[index] is None:
                embeddings[name] = None
                continue
            if name in STUDENT_FIELDS:
                cached[index] = gather_with_grad(getattr(fresh, name))  # (W·B, P), with gradient
            embeddings[name] = torch.cat(cached)  # (k·W·B, P)
        return fresh.replace(**embeddings, pair_ids=self.pair_ids)


def fill_feature_cache(
    batches: Sequence[dict],
    embed: Callable[[int, dict], ObjectiveInputs],
    device: torch.device,
) -> FeatureCache:
    r"""
    The first pass: run every micro-batch without gradient and cache its gathered embeddings.

    Args:
        batches (`Sequence[dict]`): the step's micro-batches, in order.
        embed (`Callable`): `embed(index, batch)` runs micro-batch `index` through the model in training mode and
            returns its [`ObjectiveInputs`] (embeddings only, teacher included).
        device (`torch.device`): where the model runs (its RNG state is saved per micro-batch).

    Returns:
        [`FeatureCache`]
    """
    cache = FeatureCache()
    masked = []
    if batches and all(batch.get("pair_ids") is not None for batch in batches):
        cache.pair_ids = torch.cat(
            [gather_no_grad(torch.as_tensor(batch["pair_ids"], device=device)) for batch in batches]
        )
    with torch.no_grad():
        for index, batch in enumerate(batches):
            cache.rng_states.append(rng_state(device))
            output = embed(index, batch)
            cache.blocks.append(
                {name: None if value is None else gather_no_grad(value) for name, value in output.embeddings().items()}
            )
            if output.mlm_labels is not None:
                masked.append(output.mlm_labels)
    if masked:
        cache.mlm_count = count_masked_tokens(torch.cat(masked))
    return cache


__all__ = ["FeatureCache", "fill_feature_cache", "rng_state", "set_rng_state"]
