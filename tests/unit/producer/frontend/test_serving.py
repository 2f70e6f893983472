"""The OpenAI serving objects' shared parts: the one usage and the chunk shapes."""

from __future__ import annotations

from producer.frontend.serving import ChatChunks, TextChunks, usage
from schemas.openai import OpenAIUsage
from tests.unit.factories import error_result, ok_result, task_message


def test_usage_counts_each_prompt_once_for_its_n_choices() -> None:
    # Two prompts (3 and 2 tokens), n=2: choices 0,1 are of the first, 2,3 of the second.
    results = {i: ok_result(i, "echo", prompt_tokens=p) for i, p in enumerate([3, 3, 2, 2])}
    expected = OpenAIUsage(prompt_tokens=5, completion_tokens=24, total_tokens=29)
    assert usage(results, 2) == expected
    assert usage(results, 1).prompt_tokens == 10  # n=1: four prompts


def test_usage_skips_a_failed_choice() -> None:
    results = {0: ok_result(0, "echo"), 1: error_result(1, "echo", "backend_error", "boom")}
    assert usage(results, 2).completion_tokens == 6


def test_text_and_chat_chunks_share_the_envelope() -> None:
    task = task_message(request_id="abc")
    text, chat = TextChunks(task, "echo"), ChatChunks(task, "echo")
    assert text.opening(0) is None
    assert text.delta(1, "hi", "stop")["choices"] == [
        {"index": 1, "text": "hi", "logprobs": None, "finish_reason": "stop"}
    ]
    assert chat.opening(0) == chat.delta(0, "x") | {
        "choices": [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
        ]
    }
    assert chat.delta(0, "", "length")["choices"][0]["delta"] == {}
    totals = OpenAIUsage(prompt_tokens=1, completion_tokens=2, total_tokens=3)
    kinds = {"cmpl": "text_completion", "chatcmpl": "chat.completion.chunk"}
    for chunks, (prefix, kind) in zip((text, chat), kinds.items(), strict=True):
        closing = chunks.usage(totals)
        assert closing["object"] == kind and closing["id"] == f"{prefix}-abc"
        assert closing["choices"] == [] and closing["usage"]["total_tokens"] == 3
