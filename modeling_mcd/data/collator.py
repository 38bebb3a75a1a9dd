# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Batching: `MCDCollator`, and `SeededCollator`, which makes each caption's MLM mask a function of its sample.

Data flow: samples of `image_text` (`{"pixel_values": uint8 (3, S, S), "caption": str, "pair_id": int, "skipped":
{...}}`) -> `MCDCollator` stacks the images to uint8 (B, 3, S, S), tokenizes the captions to (B, L), makes the
MLM-masked copy of the ids with transformers' `DataCollatorForLanguageModeling` and stacks the pair ids. Random crops
and augmentations happen later, batched on the accelerator (`augmentation.py`).

Under `MCDTrainer` the samples come through `image_text.KeyedSamples` and the collator is wrapped in
`SeededCollator`: every caption is masked with its own seed, from (run seed, epoch, index), so its mask does
not depend on how many batches were collated before (resume, workers), nor on which other samples share its
batch (1 process or several, micro-batches).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerBase
from transformers.utils import logging

from .image_text import SAMPLE_KEY
from .seeding import derive_seed

logger = logging.get_logger(__name__)

#: Appended to a sample's (run seed, epoch, index) for its MLM mask, so the mask's stream differs from the
#: caption draw's (`decoding.select_caption` uses the same three keys).
MLM_STREAM = 1


@dataclass
class MCDCollator:
    r"""
    Batch the samples of `ImageTextDataset`: stack images, tokenize captions, mask a copy for MLM.

    Returns a dict with
    - `pixel_values`: uint8 (B, 3, S, S), still at the base size (augmentation runs on the accelerator);
    - `input_ids`, `attention_mask` (and `token_type_ids` when the tokenizer makes them): (B, L), the
      captions truncated to `max_length` and padded to the longest (or to `pad_to_multiple_of`);
    - `mlm_input_ids`, `mlm_labels`: (B, L), the masked copy of `input_ids` and its labels (-100 where
      not masked), made by transformers' `DataCollatorForLanguageModeling` (15% of the non-special,
      non-padding tokens; 80% -> [MASK], 10% -> random, 10% kept). Absent when `mlm_probability=0`;
    - `pair_ids`: (B,) long, each sample's `pair_id` (for the loss); absent unless every sample has one;
    - `bad_samples`: {reason: [record, ...]}, the skipped rows of the batch's `skipped` dicts (pop it before the
      model; `skipped.BadSampleCounter` counts it).

    Args:
        tokenizer (`PreTrainedTokenizerBase`): the text tower's tokenizer (needs a mask token for MLM).
        max_length (`int`, *optional*, defaults to 32): captions are truncated to this many tokens.
        mlm_probability (`float`, *optional*, defaults to 0.15): share of tokens masked; 0 disables MLM.
        pad_to_multiple_of (`int`, *optional*): pad the length to a multiple of this.
        seed (`int`, *optional*): seed of the masking generator (per DataLoader worker: seed + worker id,
            as in `DataCollatorForLanguageModeling`); `None` uses torch's global RNG.
    """

    tokenizer: PreTrainedTokenizerBase
    max_length: int = 32
    mlm_probability: float = 0.15
    pad_to_multiple_of: int | None = None
    seed: int | None = None

    def __post_init__(self):
        if self.max_length < 2:
            raise ValueError(f"max_length must be at least 2 (room for the special tokens), got {self.max_length}")
        if self.pad_to_multiple_of is not None and self.max_length % self.pad_to_multiple_of:
            # The tokenizer refuses this pair too, but only at the first batch.
            raise ValueError(
                f"max_length={self.max_length} must be a multiple of pad_to_multiple_of={self.pad_to_multiple_of}"
            )
        if not 0.0 <= self.mlm_probability <= 1.0:
            raise ValueError(f"mlm_probability must be in [0, 1], got {self.mlm_probability}")
        self.mlm_collator = None
        if self.mlm_probability > 0:
            self.mlm_collator = DataCollatorForLanguageModeling(
                tokenizer=self.tokenizer,
                mlm=True,
                mlm_probability=self.mlm_probability,
                pad_to_multiple_of=self.pad_to_multiple_of,
                seed=self.seed,
            )

    def __call__(self, examples: Sequence[Mapping[str, Any]], seeds: Sequence[int] | None = None) -> dict[str, Any]:
        """Collate `examples`; with `seeds` (one per example) each caption's MLM mask is drawn from its own seed."""
        if not examples:
            raise ValueError("cannot collate an empty list of examples")
        shapes = {tuple(example["pixel_values"].shape) for example in examples}
        if len(shapes) != 1:
            raise ValueError(f"pixel_values of one batch must share a shape, got {sorted(shapes)}")
        pixel_values = torch.stack([torch.as_tensor(example["pixel_values"]) for example in examples])  # (B, 3, S, S)
        text = self.tokenizer(
            [example["caption"] for example in examples],
            truncation=True,
            max_length=self.max_length,
            padding="longest",
            pad_to_multiple_of=self.pad_to_multiple_of,
            return_special_tokens_mask=self.mlm_collator is not None,
            return_tensors="pt",
        )
        batch = {"pixel_values": pixel_values, **text}
        if self.mlm_collator is not None:
            # Padding is never a masking candidate, whatever the tokenizer reports for it.
            special = batch.pop("special_tokens_mask") | (1 - batch["attention_mask"])  # (B, L)
            if seeds is None:
                features = [
                    {"input_ids": ids, "special_tokens_mask": mask} for ids, mask in zip(batch["input_ids"], special)
                ]
                masked = self.mlm_collator(features)  # already padded: its pad() is a no-op on the length
                batch["mlm_input_ids"], batch["mlm_labels"] = masked["input_ids"], masked["labels"]
            else:
                if len(seeds) != len(examples):
                    raise ValueError(f"{len(seeds)} seeds for {len(examples)} examples")
                batch["mlm_input_ids"], batch["mlm_labels"] = self._mask_rows(batch["input_ids"], special, seeds)
        if all("pair_id" in example for example in examples):
            batch["pair_ids"] = torch.tensor([int(example["pair_id"]) for example in examples])  # (B,)
        bad_samples: dict[str, list] = {}
        for example in examples:
            for reason, records in (example.get("skipped") or {}).items():
                bad_samples.setdefault(reason, []).extend(records)
        batch["bad_samples"] = bad_samples
        return batch

    def _mask_rows(
        self, input_ids: torch.Tensor, special: torch.Tensor, seeds: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask each row with transformers' `torch_mask_tokens` under its own seed. (B, L) -> (B, L), (B, L)

        Each row is padded to `max_length` first, so its random draws never depend on the batch's length L.
        """
        length = input_ids.shape[1]
        room = max(self.max_length - length, 0)
        ids = F.pad(input_ids, (0, room), value=self.tokenizer.pad_token_id or 0)  # (B, L')
        special = F.pad(special, (0, room), value=1)  # padding is never masked
        masked_rows, label_rows = [], []
        for row_ids, row_special, seed in zip(ids, special, seeds):
            with torch.random.fork_rng(devices=[]):
                torch.random.default_generator.manual_seed(seed)
                masked, labels = self.mlm_collator.torch_mask_tokens(row_ids[None].clone(), row_special[None].bool())
            masked_rows.append(masked[:, :length])
            label_rows.append(labels[:, :length])
        return torch.cat(masked_rows), torch.cat(label_rows)


class SeededCollator:
    """Runs a collator that takes per-example `seeds` (`MCDCollator`), with each seed derived from (run seed,
    epoch, index) of its example.

    A caption's MLM mask then depends only on which sample it is and the epoch, not on how many batches the
    process (or DataLoader worker) collated before, nor on the other samples of its batch: a resumed run
    collates only the batches after the checkpoint, DataLoader prefetching runs ahead of the optimizer step,
    workers hold their own RNG, and a global batch may be split across processes or micro-batches.

    Args:
        collator (`Callable`): the collator to run, called as `collator(examples, seeds=...)`.
        seed (`int`): the run's seed.
    """

    def __init__(self, collator: Callable, seed: int):
        self.collator = collator
        self.seed = seed
        mlm = getattr(collator, "mlm_collator", None)
        if getattr(mlm, "seed", None) is not None:
            logger.warning(
                "The collator's MLM masking has its own seeded generator: its masks are reproducible in a fresh "
                "run but NOT after resuming from a checkpoint. Leave its `seed` unset; MCDTrainer seeds each batch."
            )

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> Any:
        # Each example carries (epoch, index) from `KeyedSamples`.
        seeds = [derive_seed(self.seed, *example[SAMPLE_KEY], MLM_STREAM) for example in examples]
        examples = [{k: v for k, v in example.items() if k != SAMPLE_KEY} for example in examples]
        return self.collator(examples, seeds=seeds)
