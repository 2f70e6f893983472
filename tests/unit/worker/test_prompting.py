"""The ids a local model is fed: the real Llama-2 tokenizer, Meta's format, one BOS at most."""

from __future__ import annotations

from typing import Any

import pytest
from transformers import AutoTokenizer

from tests.llama2_fixture import Llama2Fixture, check_golden
from tests.unit.factories import task_message
from worker.prompting import PromptEncoder, conversation
from worker.weights import load_tokenizer

BOS = 1
# "<s>[INST] Once upon a time [/INST]" as Meta's reference code encodes it.
META_CHAT = [BOS, 518, 25580, 29962, 9038, 2501, 263, 931, 518, 29914, 25580, 29962]


@pytest.fixture(scope="module")
def chat_tokenizer(llama2: Llama2Fixture) -> Any:
    return load_tokenizer(llama2.chat)


def test_the_worker_reads_llama2s_tokenizer_as_meta_wrote_it(
    llama2: Llama2Fixture, chat_tokenizer: Any
) -> None:
    check_golden(chat_tokenizer, llama2.golden())  # raises, naming the cases, on any drift


def test_transformers_llama_class_would_miss_the_cases_that_begin_with_a_space(
    llama2: Llama2Fixture,
) -> None:
    # Known behaviour of transformers 5 on Meta's checkpoints (tokenizer_class LlamaTokenizer):
    # why load_tokenizer reads tokenizer.json itself. If this starts failing, transformers
    # changed, and load_tokenizer may be simplified.
    by_class = AutoTokenizer.from_pretrained(llama2.chat)
    wrong = [
        t for t, ids in llama2.golden() if by_class(t, add_special_tokens=False)["input_ids"] != ids
    ]
    assert type(by_class).__name__ == "LlamaTokenizer"
    assert len(wrong) == 15
    assert all(t.startswith(" ") for t in wrong)


def test_metas_chat_format_gets_exactly_one_bos(chat_tokenizer: Any) -> None:
    text = chat_tokenizer.apply_chat_template(
        conversation(task_message()), add_generation_prompt=True, tokenize=False
    )
    assert text == "<s>[INST] Once upon a time [/INST]"
    assert chat_tokenizer(text)["input_ids"][:2] == [BOS, BOS]  # the defect encode() avoids
    assert PromptEncoder.of(chat_tokenizer).encode(text) == META_CHAT


def test_a_raw_prompt_gets_the_bos_the_tokenizer_adds(chat_tokenizer: Any) -> None:
    assert PromptEncoder.of(chat_tokenizer).encode("Once upon a time") == [
        BOS,
        9038,
        2501,
        263,
        931,
    ]


def test_a_system_message_renders_metas_sys_block(chat_tokenizer: Any) -> None:
    message = task_message(
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    )
    text = chat_tokenizer.apply_chat_template(
        conversation(message), add_generation_prompt=True, tokenize=False
    )
    assert text == "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]"
    assert PromptEncoder.of(chat_tokenizer).encode(text).count(BOS) == 1
