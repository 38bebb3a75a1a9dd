"""WordPiece tokenizer trained on captions (`modeling_mcd.trainer.wordpiece`), for text towers trained from scratch."""

import pytest
import torch
from transformers import AutoTokenizer, DataCollatorForLanguageModeling

from modeling_mcd.trainer.wordpiece import SPECIAL_TOKENS, train_wordpiece_tokenizer

# Letters and spaces only, so pre-tokenisation is a plain whitespace split (the naive reference below relies on it).
CAPTIONS = [
    "a photo of a red circle",
    "two big blue squares on the left",
    "a small green triangle and a yellow star",
    "three purple crosses in the middle",
    "a large orange circle with a white border",
    "the black square is above the red triangle",
    "one blue star next to two green circles",
]
WORDS = sorted({word for caption in CAPTIONS for word in caption.split()})


def naive_wordpiece(word: str, vocab: set[str], unk: str = "[UNK]") -> list[str]:
    """BERT's greedy longest-match-first WordPiece for one lowercased word, written as plain loops."""
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                break
            end -= 1
        if end == start:
            return [unk]
        pieces.append(piece)
        start = end
    return pieces


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece_tokenizer(CAPTIONS, vocab_size=97)


def test_special_tokens_are_berts_and_drive_the_mlm_collator(tokenizer):
    assert tokenizer.pad_token == "[PAD]" and tokenizer.unk_token == "[UNK]"
    assert tokenizer.cls_token == "[CLS]" and tokenizer.sep_token == "[SEP]" and tokenizer.mask_token == "[MASK]"
    vocab = tokenizer.get_vocab()
    for token in SPECIAL_TOKENS:
        assert tokenizer.convert_tokens_to_ids(token) == vocab[token]
    ids = {tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id}
    assert len(ids | {tokenizer.mask_token_id}) == len(SPECIAL_TOKENS)  # five distinct ids

    # Mask every maskable token: [CLS]/[SEP]/[PAD] must be recognised as special and left alone.
    collator = DataCollatorForLanguageModeling(
        tokenizer, mlm_probability=1.0, mask_replace_prob=1.0, random_replace_prob=0.0, seed=3
    )
    texts = [CAPTIONS[2], "a red star"]  # different lengths: the second gets padded
    batch = collator([tokenizer(text) for text in texts])
    plain = tokenizer(texts, padding=True, return_tensors="pt")["input_ids"]  # (2, L)
    special = torch.isin(plain, torch.tensor([tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id]))
    assert special[:, 0].all() and (plain[1] == tokenizer.pad_token_id).any()
    assert torch.equal(batch["input_ids"][special], plain[special])
    assert (batch["input_ids"][~special] == tokenizer.mask_token_id).all()
    assert (batch["labels"][special] == -100).all()
    assert torch.equal(batch["labels"][~special], plain[~special])


def test_training_captions_tokenize_without_unk_like_a_naive_wordpiece(tokenizer):
    vocab = set(tokenizer.get_vocab())
    for caption in CAPTIONS:
        expected = [piece for word in caption.split() for piece in naive_wordpiece(word, vocab)]
        assert tokenizer.tokenize(caption.upper()) == expected  # lowercased, same greedy longest match
        assert "[UNK]" not in expected
        ids = tokenizer(caption)["input_ids"]
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        assert tokenizer.decode(ids, skip_special_tokens=True) == caption
    assert tokenizer.tokenize("a zebra") != ["[UNK]", "[UNK]"]  # unseen word: spelled with learned pieces
    assert tokenizer.tokenize("a €") == ["a", "[UNK]"]  # unseen character


@pytest.mark.parametrize("vocab_size", [61, 97, 5000])
def test_vocab_size_is_an_upper_bound(vocab_size):
    tokenizer = train_wordpiece_tokenizer(CAPTIONS, vocab_size=vocab_size)
    assert len(tokenizer) <= vocab_size
    vocab = set(tokenizer.get_vocab())
    assert set(SPECIAL_TOKENS) <= vocab
    if vocab_size == 5000:  # room for everything: every training word is one token
        assert set(WORDS) <= vocab
        assert len(tokenizer) < vocab_size  # a small corpus gives fewer tokens than asked for


def test_save_and_reload_with_auto_tokenizer(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert type(reloaded) is type(tokenizer)
    assert reloaded.get_vocab() == tokenizer.get_vocab()
    assert reloaded.all_special_ids == tokenizer.all_special_ids
    assert reloaded.mask_token_id == tokenizer.mask_token_id and reloaded.pad_token_id == tokenizer.pad_token_id
    texts = CAPTIONS + ["An UNSEEN zebra €"]
    assert reloaded(texts, padding=True)["input_ids"] == tokenizer(texts, padding=True)["input_ids"]


def test_training_is_deterministic(tokenizer):
    # Five runs on the same captions (from a generator: any iterable is accepted) give one vocabulary, so
    # every process of a multi-process run, and a rerun from the same seed, share it.
    runs = [train_wordpiece_tokenizer((caption for caption in CAPTIONS), vocab_size=97) for _ in range(5)]
    assert all(run.get_vocab() == tokenizer.get_vocab() for run in runs)


@pytest.mark.parametrize("vocab_size", [0, len(SPECIAL_TOKENS)])
def test_too_small_vocab_is_refused(vocab_size):
    with pytest.raises(ValueError, match="vocab_size"):
        train_wordpiece_tokenizer(CAPTIONS, vocab_size=vocab_size)
