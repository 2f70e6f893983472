"""OpenAI-compatible request bodies: ranges, stop forms, unsupported fields refused."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from schemas.api import DEFAULT_MAX_TOKENS
from schemas.openai import ChatCompletionsRequest, CompletionsRequest


def _chat(**fields: Any) -> ChatCompletionsRequest:
    return ChatCompletionsRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]} | fields
    )


@pytest.mark.parametrize(
    ("stop", "expected"), [(None, ()), ("x", ("x",)), (["a", "b"], ("a", "b"))]
)
def test_stop_as_a_string_or_a_list(stop: Any, expected: tuple[str, ...]) -> None:
    assert CompletionsRequest(model="m", prompt="p", stop=stop).stops == expected


def test_temperature_runs_to_two_as_openai_documents() -> None:
    assert CompletionsRequest(model="m", prompt="p", temperature=2).temperature == 2.0
    with pytest.raises(ValidationError, match="temperature"):
        CompletionsRequest(model="m", prompt="p", temperature=2.1)


@pytest.mark.parametrize("field", ["logprobs", "echo", "suffix", "tools", "logit_bias"])
def test_unimplemented_features_are_refused_not_ignored(field: str) -> None:
    value: Any = {
        "logprobs": 2,
        "echo": True,
        "suffix": "x",
        "tools": [{}],
        "logit_bias": {"1": 5},
    }[field]
    with pytest.raises(ValidationError, match=field):
        CompletionsRequest.model_validate({"model": "m", "prompt": "p", field: value})


def test_unknown_harmless_fields_are_ignored() -> None:
    body = CompletionsRequest.model_validate({"model": "m", "prompt": "p", "user": "u", "seed": 3})
    assert body.prompts == ["p"]


def test_prompt_lists_and_n() -> None:
    body = CompletionsRequest(model="m", prompt=["a", "b"], n=3)
    assert body.prompts == ["a", "b"] and body.n == 3
    with pytest.raises(ValidationError):
        CompletionsRequest(model="m", prompt=[])
    with pytest.raises(ValidationError):
        CompletionsRequest(model="m", prompt="p", n=0)


def test_chat_token_limit_prefers_max_completion_tokens() -> None:
    assert _chat().token_limit == DEFAULT_MAX_TOKENS
    assert _chat(max_tokens=7).token_limit == 7
    assert _chat(max_tokens=7, max_completion_tokens=5).token_limit == 5


def test_chat_content_parts_are_joined() -> None:
    body = ChatCompletionsRequest.model_validate(
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                }
            ],
        }
    )
    assert body.messages[0].text == "ab"
    with pytest.raises(ValidationError):
        _chat(messages=[])
    with pytest.raises(ValidationError):
        _chat(messages=[{"role": "tool", "content": "x"}])


def test_seed_is_an_integer_carried_to_the_request() -> None:
    body = {"model": "m", "prompt": "p", "seed": 42}
    assert CompletionsRequest.model_validate(body).seed == 42
    assert CompletionsRequest.model_validate({"model": "m", "prompt": "p"}).seed is None
    with pytest.raises(ValidationError, match="seed"):
        CompletionsRequest.model_validate(body | {"seed": "forty-two"})
