# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Train a BERT WordPiece tokenizer on captions, for text towers trained from scratch."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers.implementations import BertWordPieceTokenizer
from transformers import BertTokenizer

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece_tokenizer(
    texts: Iterable[str], vocab_size: int = 1000, min_frequency: int = 1, lowercase: bool = True
) -> BertTokenizer:
    r"""
    Train an uncased BERT WordPiece vocabulary on `texts` with the `tokenizers` library.

    Args:
        texts (`Iterable[str]`): the training captions.
        vocab_size (`int`, *optional*, defaults to 1000): the largest vocabulary to learn (a small caption
            corpus may give fewer tokens).
        min_frequency (`int`, *optional*, defaults to 1): drop merges seen fewer times.
        lowercase (`bool`, *optional*, defaults to `True`)

    Returns:
        `BertTokenizer` (the fast, `tokenizers`-backed class in transformers 5), with BERT's special tokens.
    """
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}")
    trainer = BertWordPieceTokenizer(lowercase=lowercase)
    trainer.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS)
    return BertTokenizer(vocab=trainer.get_vocab(), do_lower_case=lowercase)


__all__ = ["train_wordpiece_tokenizer"]
