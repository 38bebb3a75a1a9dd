# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""A BERT WordPiece vocabulary learned from captions, for text towers trained from scratch.

Why not `tokenizers`' WordPiece trainer: it breaks ties between equally frequent merges in hash-map
order, so two runs on the same captions learn different vocabularies (huggingface/tokenizers#1794). A
multi-process run would then give each process its own vocabulary for the same embedding table, and a
seed would not reproduce a run. This builder is a pure function of the captions: BERT's own normaliser
and pre-tokeniser (from `tokenizers`) split the words, and the vocabulary is every character (as a word
start and as a `##` continuation, so any word made of seen characters can be spelled) followed by the
most frequent whole words, ties broken alphabetically. Tokenisation is then BERT's usual greedy
longest-match WordPiece (`BertTokenizer`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer
from transformers import BertTokenizer

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _by_frequency(counts: Counter) -> list[str]:
    """Most frequent first, ties alphabetical: a deterministic order."""
    return [item for item, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def train_wordpiece_tokenizer(
    texts: Iterable[str], vocab_size: int = 1000, min_frequency: int = 1, lowercase: bool = True
) -> BertTokenizer:
    r"""
    Learn an uncased BERT WordPiece vocabulary from `texts`, deterministically.

    Args:
        texts (`Iterable[str]`): the training captions.
        vocab_size (`int`, *optional*, defaults to 1000): the largest vocabulary (a small caption corpus may
            give fewer tokens). Characters come first, so a vocabulary too small for all of them spells
            rare characters as [UNK].
        min_frequency (`int`, *optional*, defaults to 1): whole words seen fewer times are spelled in pieces.
        lowercase (`bool`, *optional*, defaults to `True`)

    Returns:
        `BertTokenizer` (the fast, `tokenizers`-backed class in transformers 5), with BERT's special tokens.
    """
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}")
    normalizer = BertNormalizer(lowercase=lowercase)
    pre_tokenizer = BertPreTokenizer()
    words: Counter = Counter()
    for text in texts:
        words.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    characters: Counter = Counter()
    for word, count in words.items():
        characters.update({char: count for char in word})

    ordered_chars = _by_frequency(characters)
    candidates = SPECIAL_TOKENS + ordered_chars + ["##" + char for char in ordered_chars]
    candidates += [word for word in _by_frequency(words) if len(word) > 1 and words[word] >= min_frequency]
    vocab: dict[str, int] = {}
    for token in candidates:
        if len(vocab) == vocab_size:
            break
        vocab.setdefault(token, len(vocab))
    return BertTokenizer(vocab=vocab, do_lower_case=lowercase)


__all__ = ["SPECIAL_TOKENS", "train_wordpiece_tokenizer"]
