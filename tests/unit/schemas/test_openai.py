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


def test_completions_max_tokens_defaults_to_16_as_openai_documents() -> None:
    assert CompletionsRequest(model="m", prompt="p").max_tokens == 16


@pytest.mark.parametrize(
    ("field", "value"),
    [("best_of", 2), ("best_of", 5), ("functions", [{"name": "f"}]), ("top_logprobs", 1)],
)
def test_best_of_functions_and_top_logprobs_are_refused(field: str, value: Any) -> None:
    for body in ({"model": "m", "prompt": "p"}, {"model": "m", "messages": [_HI]}):
        request = CompletionsRequest if "prompt" in body else ChatCompletionsRequest
        with pytest.raises(ValidationError, match=field):
            request.model_validate(body | {field: value})
    assert CompletionsRequest.model_validate({"model": "m", "prompt": "p", "best_of": 1})


_HI = {"role": "user", "content": "hi"}


def test_at_most_16_stop_strings_on_the_openai_routes_too() -> None:
    sixteen = [f"s{i}" for i in range(16)]
    assert CompletionsRequest(model="m", prompt="p", stop=sixteen).stops == tuple(sixteen)
    with pytest.raises(ValidationError, match="stop"):
        CompletionsRequest(model="m", prompt="p", stop=[*sixteen, "s16"])


def test_integral_numbers_are_integers_and_fractions_are_not() -> None:
    body = CompletionsRequest.model_validate(
        {"model": "m", "prompt": "p", "n": 2.0, "max_tokens": 267.0}
    )
    assert (body.n, body.max_tokens) == (2, 267)
    assert _chat(max_completion_tokens=9.0).token_limit == 9
    for field in ("n", "max_tokens"):
        with pytest.raises(ValidationError, match=field):
            CompletionsRequest.model_validate({"model": "m", "prompt": "p", field: 2.5})


@pytest.mark.parametrize("fields", [{"stream": 1}, {"stream_options": {"include_usage": 0}}])
def test_booleans_are_json_booleans(fields: dict[str, Any]) -> None:
    # The schema says boolean; 0 and 1 accepted would be a schema-violating request served.
    with pytest.raises(ValidationError):
        CompletionsRequest.model_validate({"model": "m", "prompt": "p"} | fields)


def test_the_schema_declares_which_values_of_unsupported_fields_pass() -> None:
    properties = CompletionsRequest.model_json_schema()["properties"]
    assert properties["logprobs"]["enum"] == [None, False, 0, [], {}]
    assert properties["best_of"]["enum"] == [None, 1]
    for value in properties["logprobs"]["enum"]:
        CompletionsRequest.model_validate({"model": "m", "prompt": "p", "logprobs": value})
    with pytest.raises(ValidationError, match="best_of"):
        CompletionsRequest.model_validate({"model": "m", "prompt": "p", "best_of": 2})


def test_seed_is_an_integer_carried_to_the_request() -> None:
    body = {"model": "m", "prompt": "p", "seed": 42}
    assert CompletionsRequest.model_validate(body).seed == 42
    assert CompletionsRequest.model_validate({"model": "m", "prompt": "p"}).seed is None
    with pytest.raises(ValidationError, match="seed"):
        CompletionsRequest.model_validate(body | {"seed": "forty-two"})
