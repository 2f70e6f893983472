"""GrowingText: the whole text, built from bounded windows of the latest tokens."""

from __future__ import annotations

import random

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from worker.backends.transformers import _attention
from worker.text import GrowingText

_CORPUS = [
    "Once upon a time a fox met an owl. Café, naïve, déjà vu: 東京 and 🦊🦉 emoji.",
    "The heron waited. The octopus swam away; the whale sang 🐋 for a while.",
]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    """A small byte-level BPE (GPT-2's scheme, as SmolLM2's): multi-byte text spans tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    return tok


def test_the_text_equals_the_full_decode_and_each_decode_is_short(tokenizer: Tokenizer) -> None:
    windows: list[int] = []

    def decode(ids: list[int]) -> str:
        windows.append(len(ids))
        return tokenizer.decode(ids)

    rng = random.Random(3)
    ids = [t for text in _CORPUS * 6 for t in tokenizer.encode(text).ids]
    ids += [rng.randrange(tokenizer.get_vocab_size()) for _ in range(200)]  # any token order
    text = GrowingText(decode)
    for n in range(1, len(ids) + 1):
        text.update(ids[:n])
        full = tokenizer.decode(ids[:n])
        if not full.endswith("\ufffd"):
            assert text.text == full  # held back only while a character is incomplete
    assert len(ids) > 400
    assert max(windows) <= 16  # the window never grows with the text (400+ tokens)


def test_recent_holds_a_stop_string_the_latest_token_completed() -> None:
    text = GrowingText(lambda ids: "".join("abcdefgh"[i] for i in ids))
    text.update([0, 1, 2])
    assert text.recent(2) == "abc"  # the first update added everything
    text.update([0, 1, 2, 3])
    assert text.recent(2) == "cd"  # "cd" ends in the new "d"; "ab" cannot have been made now
    assert text.update([0, 1, 2, 3]) == "" and text.recent(2) == ""


def test_attention_is_sdpa_even_where_flash_attention_is_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import transformers.utils.import_utils as utils

    monkeypatch.setattr(utils, "is_flash_attn_2_available", lambda: True)
    assert _attention(torch.device("cuda")) == "sdpa"
    assert _attention(torch.device("cpu")) == "sdpa"
