# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Tests of modeling_mcd.data.collator: `MCDCollator` (shapes, truncation, MLM masking as transformers does it)
and `SeededCollator` (a caption's mask is a function of its sample's key, not of the RNG history or the batch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _data_helpers import SIZE, WORDS, expected_pixels, word_tokenizer
from transformers import DataCollatorForLanguageModeling

from modeling_mcd.data import SAMPLE_KEY, KeyedSamples, MCDCollator, SeededCollator
from modeling_mcd.data.collator import MLM_STREAM
from modeling_mcd.data.seeding import derive_seed


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer()


def random_captions(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(1, 45))) for _ in range(n)]


def examples_for(captions):
    return [{"pixel_values": expected_pixels(k), "caption": c, "skipped": {}} for k, c in enumerate(captions)]


def test_collator_shapes_dtypes_and_truncation(tokenizer):
    captions = ["a cat", "the big red dog sits on the mat under the blue sky " * 3, "bird"]
    batch = MCDCollator(tokenizer, max_length=9)(examples_for(captions))
    assert batch["pixel_values"].dtype == torch.uint8 and batch["pixel_values"].shape == (3, 3, SIZE, SIZE)
    reference = tokenizer(captions, truncation=True, max_length=9, padding="longest", return_tensors="pt")
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(batch[key], reference[key])
    assert batch["input_ids"].shape == (3, 9)
    assert batch["input_ids"][1, -1] == tokenizer.sep_token_id  # truncated, still closed by [SEP]
    assert batch["mlm_input_ids"].shape == batch["mlm_labels"].shape == (3, 9)
    assert batch["bad_samples"] == {}

    padded = MCDCollator(tokenizer, max_length=12, pad_to_multiple_of=4)(examples_for(captions[::2]))
    assert padded["input_ids"].shape == (2, 4) and padded["mlm_input_ids"].shape == (2, 4)
    with pytest.raises(ValueError, match="pad_to_multiple_of"):
        MCDCollator(tokenizer, max_length=9, pad_to_multiple_of=4)

    plain = MCDCollator(tokenizer, mlm_probability=0.0)(examples_for(captions))
    assert "mlm_input_ids" not in plain and "mlm_labels" not in plain
    with pytest.raises(ValueError, match="mlm_probability"):
        MCDCollator(tokenizer, mlm_probability=1.5)
    with pytest.raises(ValueError, match="pixel_values"):
        MCDCollator(tokenizer)([examples_for(["a"])[0], {"pixel_values": torch.zeros(3, 2, 2), "caption": "b"}])


def test_collator_masks_exactly_like_transformers(tokenizer):
    captions = random_captions(13, seed=1)
    ours = MCDCollator(tokenizer, max_length=17, seed=5)(examples_for(captions))
    features = tokenizer(captions, truncation=True, max_length=17, return_special_tokens_mask=True)
    peer = DataCollatorForLanguageModeling(tokenizer, seed=5)(
        [
            {"input_ids": ids, "special_tokens_mask": mask}
            for ids, mask in zip(features["input_ids"], features["special_tokens_mask"])
        ]
    )
    assert (peer["labels"] != -100).sum() > 5  # the comparison covers real masking
    assert torch.equal(ours["mlm_input_ids"], peer["input_ids"])
    assert torch.equal(ours["mlm_labels"], peer["labels"])


def test_collator_mlm_statistics(tokenizer):
    batch = MCDCollator(tokenizer, max_length=32, seed=0)(examples_for(random_captions(600, seed=2)))
    ids, mlm_ids, labels = batch["input_ids"], batch["mlm_input_ids"], batch["mlm_labels"]
    specials = torch.isin(ids, torch.tensor(tokenizer.all_special_ids))
    eligible = batch["attention_mask"].bool() & ~specials
    selected = labels != -100
    assert not (selected & ~eligible).any()  # never [CLS], [SEP] or padding
    assert (batch["attention_mask"] == 0).any() and (ids[~eligible] == mlm_ids[~eligible]).all()
    assert abs(selected.sum() / eligible.sum() - 0.15) < 0.02
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(mlm_ids[~selected], ids[~selected])
    to_mask = (mlm_ids[selected] == tokenizer.mask_token_id).float().mean()
    to_random = (mlm_ids[selected] != tokenizer.mask_token_id) & (mlm_ids[selected] != ids[selected])
    assert abs(to_mask - 0.8) < 0.04
    assert abs(to_random.float().mean() - 0.1 * (1 - 1 / len(tokenizer))) < 0.03


def test_seeded_collator_masks_each_caption_from_its_own_key(tokenizer):
    keyed = KeyedSamples(examples_for(random_captions(8, seed=3)))
    collator = SeededCollator(MCDCollator(tokenizer, max_length=48, mlm_probability=0.3), seed=3)
    batch = collator([keyed[i] for i in range(6)])
    assert (batch["mlm_labels"] != -100).sum() > 5  # the check covers real masking
    state = torch.get_rng_state()
    torch.rand(1000)  # a different RNG history ...
    assert torch.equal(collator([keyed[i] for i in range(6)])["mlm_input_ids"], batch["mlm_input_ids"])  # ... same
    assert not torch.equal(torch.get_rng_state(), state)
    after = torch.get_rng_state()
    collator([keyed[i] for i in range(6)])
    assert torch.equal(torch.get_rng_state(), after)  # the global RNG is left as it was

    # A caption's mask does not depend on its batch: split in two (as over 2 processes or micro-batches), in
    # another order, or padded to another length, every row keeps its mask.
    for parts in ([[0, 1, 2], [3, 4, 5]], [[5, 3], [1], [0, 4, 2]]):
        for part in parts:
            piece = collator([keyed[i] for i in part])
            length = piece["input_ids"].shape[1]
            for row, i in enumerate(part):
                assert (batch["mlm_labels"][i, length:] == -100).all()  # beyond the piece's length: padding
                for name in ("mlm_input_ids", "mlm_labels"):
                    assert torch.equal(piece[name][row], batch[name][i, :length]), (parts, i, name)

    # The inner collator sees the samples without their key, and one seed per sample from (run seed, epoch,
    # index, MLM_STREAM); the epoch changes the mask.
    seen = {}
    spy = SeededCollator(lambda examples, seeds: seen.update(examples=examples, seeds=seeds), seed=3)
    keyed.set_epoch(2)
    spy([keyed[5], keyed[1]])
    assert all(SAMPLE_KEY not in example for example in seen["examples"]) and len(seen["examples"]) == 2
    assert seen["seeds"] == [derive_seed(3, 2, 5, MLM_STREAM), derive_seed(3, 2, 1, MLM_STREAM)]
    assert not torch.equal(collator([keyed[i] for i in range(6)])["mlm_input_ids"], batch["mlm_input_ids"])


def test_collator_stacks_pair_ids_and_merges_the_skipped_records(tokenizer):
    examples = examples_for(["a cat", "a dog", "a bird"])
    assert "pair_ids" not in MCDCollator(tokenizer)(examples)  # samples without pair ids (a plain stream)
    records = [{"reason": "corrupt", "row": 4}, {"reason": "corrupt", "row": 9}, {"reason": "truncated", "row": 5}]
    for example, pair_id, skipped in zip(
        examples, (3, -1, 3), ({"corrupt": records[:1]}, {"corrupt": records[1:2], "truncated": records[2:]}, {})
    ):
        example.update(pair_id=pair_id, skipped=skipped)
    batch = MCDCollator(tokenizer)(examples)
    assert batch["pair_ids"].dtype == torch.long and batch["pair_ids"].tolist() == [3, -1, 3]
    assert batch["bad_samples"] == {"corrupt": records[:2], "truncated": records[2:]}
    assert "pair_ids" not in MCDCollator(tokenizer)([examples[0], examples_for(["a fish"])[0]])
