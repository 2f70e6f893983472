"""The HTTP bodies: every field of CompletionRequest at and past its edges, Usage, the response."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from pydantic import ValidationError

from schemas.api import (
    DEFAULT_MAX_TOKENS,
    MAX_MAX_TOKENS,
    MAX_MODELS_PER_REQUEST,
    MAX_STOP_SEQUENCES,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    Usage,
)
from tests.conftest import SPEC_EXAMPLE

_FLOAT_FIELDS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")


def _request(**fields: Any) -> CompletionRequest:
    return CompletionRequest.model_validate(
        {"prompt": "Once upon a time", "model": "echo"} | fields
    )


def _refused(**fields: Any) -> list[Any]:
    with pytest.raises(ValidationError) as info:
        _request(**fields)
    return list(info.value.errors())


def _locs(errors: list[Any]) -> set[str]:
    return {str(e["loc"][0]) for e in errors}


def test_the_spec_example_is_accepted_as_written() -> None:
    request = CompletionRequest.model_validate_json(json.dumps(SPEC_EXAMPLE))
    assert request.model_dump() == SPEC_EXAMPLE


def test_defaults_of_optional_fields() -> None:
    request = _request()
    assert request.max_tokens == DEFAULT_MAX_TOKENS == 64
    assert (request.temperature, request.top_p) == (1.0, 1.0)
    assert (request.presence_penalty, request.frequency_penalty) == (0.0, 0.0)
    assert request.stop is None


@pytest.mark.parametrize("field", ["temperature", "top_p"])
@pytest.mark.parametrize("value", [0, 0.0, 0.5, 1, 1.0])
def test_unit_floats_accept_zero_to_one_inclusive(field: str, value: float) -> None:
    assert getattr(_request(**{field: value}), field) == value


@pytest.mark.parametrize("field", ["temperature", "top_p"])
@pytest.mark.parametrize("value", [-0.0001, 1.0001, -1, 2])
def test_unit_floats_refuse_outside_zero_to_one(field: str, value: float) -> None:
    assert _locs(_refused(**{field: value})) == {field}


@pytest.mark.parametrize("field", ["presence_penalty", "frequency_penalty"])
@pytest.mark.parametrize("value", [-2, -2.0, -0.5, 0, 1.999, 2])
def test_penalties_accept_minus_two_to_two_inclusive(field: str, value: float) -> None:
    assert getattr(_request(**{field: value}), field) == value


@pytest.mark.parametrize("field", ["presence_penalty", "frequency_penalty"])
@pytest.mark.parametrize("value", [-2.0001, 2.0001, 3, -10])
def test_penalties_refuse_outside_minus_two_to_two(field: str, value: float) -> None:
    assert _locs(_refused(**{field: value})) == {field}


@pytest.mark.parametrize("field", _FLOAT_FIELDS)
@pytest.mark.parametrize("value", [True, False])
def test_floats_refuse_booleans(field: str, value: bool) -> None:
    errors = _refused(**{field: value})
    assert _locs(errors) == {field}
    assert errors[0]["type"] == "float_type"


@pytest.mark.parametrize("field", _FLOAT_FIELDS)
def test_floats_refuse_numeric_strings(field: str) -> None:
    errors = _refused(**{field: "0.5"})
    assert _locs(errors) == {field}


@pytest.mark.parametrize("field", _FLOAT_FIELDS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "NaN", "inf"])
def test_floats_refuse_nan_and_infinity(field: str, value: Any) -> None:
    assert _locs(_refused(**{field: value})) == {field}


@pytest.mark.parametrize("field", _FLOAT_FIELDS)
def test_floats_refuse_nan_written_in_a_json_body(field: str) -> None:
    # Python's json module (and so a request body) reads the non-standard NaN literal.
    body = f'{{"prompt": "p", "model": "echo", "{field}": NaN}}'
    with pytest.raises(ValidationError) as info:
        CompletionRequest.model_validate(json.loads(body))
    assert _locs(list(info.value.errors())) == {field}


@pytest.mark.parametrize("value", [1, 2, 1000, MAX_MAX_TOKENS])
def test_max_tokens_accepts_one_to_the_cap(value: int) -> None:
    assert _request(max_tokens=value).max_tokens == value


@pytest.mark.parametrize("value", [0, -1, MAX_MAX_TOKENS + 1])
def test_max_tokens_refuses_outside_one_to_the_cap(value: int) -> None:
    assert _locs(_refused(max_tokens=value)) == {"max_tokens"}


def test_max_tokens_cap_is_the_documented_4096() -> None:
    assert MAX_MAX_TOKENS == 4096


@pytest.mark.parametrize("value", [16.5, 267.25, "16", "267.0", True, False, None, math.inf])
def test_max_tokens_is_a_strict_integer(value: Any) -> None:
    assert _locs(_refused(max_tokens=value)) == {"max_tokens"}


@pytest.mark.parametrize("value", [267.0, 1.0, 4096.0])
def test_max_tokens_takes_an_integral_number_as_json_schema_does(value: float) -> None:
    # The OpenAPI document says "integer", and JSON Schema counts 267.0 an integer.
    taken = _request(max_tokens=value).max_tokens
    assert taken == int(value) and type(taken) is int


def test_max_tokens_bounds_hold_for_integral_numbers_and_reach_the_schema() -> None:
    assert _locs(_refused(max_tokens=4097.0)) == {"max_tokens"}
    assert _locs(_refused(max_tokens=0.0)) == {"max_tokens"}
    schema = CompletionRequest.model_json_schema()["properties"]["max_tokens"]
    assert (schema["type"], schema["minimum"], schema["maximum"]) == ("integer", 1, 4096)


def test_model_as_one_name() -> None:
    request = _request(model="gpt-4")
    assert request.model == "gpt-4"
    assert request.models == ["gpt-4"]


def test_model_as_a_list_keeps_order_and_duplicates() -> None:
    names = ["llama-2-7b", "gpt-4", "echo", "gpt-4"]
    assert _request(model=names).models == names


def test_models_property_is_a_copy() -> None:
    request = _request(model=["a", "b"])
    request.models.append("c")
    assert request.models == ["a", "b"]


def test_model_list_may_hold_the_maximum() -> None:
    names = [f"m{i}" for i in range(MAX_MODELS_PER_REQUEST)]
    assert _request(model=names).models == names


@pytest.mark.parametrize(
    "value",
    [
        [],
        "",
        ["echo", ""],
        [""],
        [f"m{i}" for i in range(MAX_MODELS_PER_REQUEST + 1)],
        "x" * 129,
        5,
        None,
        {"name": "echo"},
    ],
    ids=[
        "empty-list",
        "empty-string",
        "list-with-empty",
        "only-empty",
        "list-too-long",
        "name-too-long",
        "number",
        "null",
        "object",
    ],
)
def test_model_refuses(value: Any) -> None:
    assert _locs(_refused(model=value)) == {"model"}


def test_model_is_required() -> None:
    with pytest.raises(ValidationError) as info:
        CompletionRequest.model_validate({"prompt": "p"})
    assert [(e["loc"], e["type"]) for e in info.value.errors()] == [(("model",), "missing")]


def test_prompt_is_required() -> None:
    with pytest.raises(ValidationError) as info:
        CompletionRequest.model_validate({"model": "echo"})
    assert [(e["loc"], e["type"]) for e in info.value.errors()] == [(("prompt",), "missing")]


@pytest.mark.parametrize("value", ["", 5, None, ["Once"]])
def test_prompt_must_be_a_non_empty_string(value: Any) -> None:
    assert _locs(_refused(prompt=value)) == {"prompt"}


def test_stop_accepts_non_empty_strings_up_to_the_limit() -> None:
    stops = [f"s{i}" for i in range(MAX_STOP_SEQUENCES)]
    assert _request(stop=stops).stop == stops
    assert _request(stop=[]).stop == []
    assert _request(stop=None).stop is None


@pytest.mark.parametrize(
    "value",
    [
        [""],
        [".", ""],
        [f"s{i}" for i in range(MAX_STOP_SEQUENCES + 1)],
        ".",
        [1],
        ["x" * 257],
    ],
    ids=["empty", "one-empty", "too-many", "bare-string", "number", "too-long"],
)
def test_stop_refuses(value: Any) -> None:
    assert _locs(_refused(stop=value)) == {"stop"}


@pytest.mark.parametrize("field", ["max_token", "n", "stream", "Temperature"])
def test_unknown_fields_are_refused(field: str) -> None:
    errors = _refused(**{field: 1})
    assert [(e["loc"], e["type"]) for e in errors] == [((field,), "extra_forbidden")]


def test_request_is_frozen() -> None:
    request = _request()
    with pytest.raises(ValidationError):
        request.temperature = 0.5  # type: ignore[misc]


def _usage(prompt: int, completion: int, ms: int) -> Usage:
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prediction_time_ms=ms,
    )


def test_usage_total_sums_every_field() -> None:
    total = Usage.total([_usage(3, 5, 100), _usage(7, 11, 250), _usage(0, 1, 1)])
    assert total == Usage(
        prompt_tokens=10, completion_tokens=17, total_tokens=27, prediction_time_ms=351
    )


def test_usage_total_of_nothing_is_zero() -> None:
    assert Usage.total([]) == _usage(0, 0, 0)


def test_response_serialises_created_as_iso_8601_and_id_as_uuid_string() -> None:
    request_id = uuid4()
    created = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
    usage = _usage(2, 3, 40)
    choice = CompletionChoice(
        text="hi", created=1_714_979_289, model="echo", finish_reason="length", usage=usage
    )
    response = CompletionResponse(id=request_id, created=created, choices=[choice], usage=usage)

    body = json.loads(response.model_dump_json())

    assert body["id"] == str(request_id)
    assert UUID(body["id"]) == request_id
    assert datetime.fromisoformat(body["created"].replace("Z", "+00:00")) == created
    assert body["created"].startswith("2024-05-06T07:08:09")
    assert body["object"] == "text_completion"
    assert body["choices"][0]["usage"]["total_tokens"] == 5
    assert set(body) == {"id", "object", "created", "choices", "usage"}


def test_at_most_16_stop_strings_pinned() -> None:
    # A literal on purpose: docs/API.md promises 16, whatever the constant says.
    sixteen = [f"s{i}" for i in range(16)]
    assert _request(stop=sixteen).stop == sixteen
    assert _locs(_refused(stop=[*sixteen, "s16"])) == {"stop"}
