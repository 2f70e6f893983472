"""describe_validation and model_errors: what a client reads when its request is refused."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from producer.frontend.errors import error_response
from producer.refusals import describe_validation, model_errors
from schemas.api import CompletionRequest, ErrorDetail
from schemas.errors import ModelUnavailable, UnknownModel

_BASE: dict[str, Any] = {"prompt": "Once upon a time", "model": "echo"}


def _errors_of(body: dict[str, Any]) -> list[Any]:
    """The errors of validating ``body``, located as FastAPI locates them (under "body")."""
    with pytest.raises(ValidationError) as info:
        CompletionRequest.model_validate(body)
    return [{**e, "loc": ("body", *e["loc"])} for e in info.value.errors()]


def _describe(**fields: Any) -> tuple[int, ErrorDetail]:
    return describe_validation(_errors_of(_BASE | fields))


def test_out_of_range_value_names_the_field_and_the_value() -> None:
    status, detail = _describe(temperature=1.5)
    assert status == 422
    assert detail.type == "invalid_request_error"
    assert detail.code == "invalid_value"
    assert detail.param == "temperature"
    assert detail.value == 1.5
    assert detail.message.startswith("temperature: ")
    assert "1.5" in detail.message
    assert "less than or equal to 1" in detail.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("top_p", -0.1),
        ("presence_penalty", 2.5),
        ("frequency_penalty", -3),
        ("max_tokens", 0),
        ("max_tokens", "16"),
    ],
)
def test_each_field_is_named_with_its_value(field: str, value: Any) -> None:
    status, detail = _describe(**{field: value})
    assert status == 422
    assert detail.param == field
    assert detail.value == value
    assert detail.message.startswith(f"{field}: ")
    assert repr(value) in detail.message


def test_boolean_for_a_float_is_refused_naming_it() -> None:
    _, detail = _describe(top_p=True)
    assert detail.param == "top_p"
    assert detail.value is True
    assert "valid number (got True)" in detail.message


def test_a_bad_stop_entry_names_its_position() -> None:
    _, detail = _describe(stop=[".", ""])
    assert detail.param == "stop.1"
    assert detail.value == ""


def test_several_bad_fields_are_all_named() -> None:
    status, detail = _describe(temperature=5, top_p=-1)
    assert status == 422
    assert "temperature: " in detail.message
    assert "top_p: " in detail.message
    assert detail.param == "temperature"


def test_missing_prompt_is_required() -> None:
    status, detail = describe_validation(_errors_of({"model": "echo"}))
    assert status == 422
    assert detail.param == "prompt"
    assert detail.message == "prompt: required"


def test_unknown_field_is_named() -> None:
    status, detail = _describe(max_token=10)
    assert status == 422
    assert detail.param == "max_token"
    assert detail.value == 10
    assert "max_token: unknown field" in detail.message


@pytest.mark.parametrize("value", [[], "", 5, None], ids=["empty-list", "empty", "int", "null"])
def test_a_bad_model_gives_the_friendly_message(value: Any) -> None:
    status, detail = _describe(model=value)
    assert status == 422
    assert detail.param == "model"
    assert detail.value == value
    assert detail.message == (
        f"model: must be a model name or a non-empty list of model names (got {value!r})"
    )


def test_a_long_value_is_shortened() -> None:
    _, detail = _describe(model="m" * 500)
    assert isinstance(detail.value, str)
    assert len(detail.value) <= 101
    assert detail.value.endswith("…")


def test_invalid_json_is_a_400() -> None:
    with pytest.raises(ValidationError) as info:
        CompletionRequest.model_validate_json(b'{"prompt": "p", "model": ')
    errors = [{**e, "loc": ("body", *e["loc"])} for e in info.value.errors()]
    status, detail = describe_validation(errors)
    assert status == 400
    assert detail.code == "invalid_json"
    assert "not valid JSON" in detail.message


def test_model_errors_unknown_wins_with_404() -> None:
    error = model_errors(
        [UnknownModel("gpt-5", "unknown model"), ModelUnavailable("gpt-4", "set OPENAI_API_KEY")]
    )
    assert error.status == 404
    assert error.detail.code == "model_not_found"
    assert error.detail.models == ["gpt-5"]
    assert "gpt-5" in error.detail.message
    assert error.headers is None


def test_model_errors_unavailable_names_every_model_and_why() -> None:
    error = model_errors(
        [
            ModelUnavailable("gpt-4", "not configured: set OPENAI_API_KEY to use gpt-4"),
            ModelUnavailable("llama-2-70b", "not configured: no local weights"),
        ]
    )
    assert error.status == 503
    assert error.detail.code == "model_unavailable"
    assert error.detail.models == ["gpt-4", "llama-2-70b"]
    assert "gpt-4: not configured: set OPENAI_API_KEY" in error.detail.message
    assert "llama-2-70b: not configured: no local weights" in error.detail.message
    assert error.headers == {"Retry-After": "5"}


def test_error_response_is_the_error_body_without_nulls() -> None:
    detail = ErrorDetail(type="t", code="c", message="m", param="p")
    response = error_response(418, detail, {"X-A": "1"})
    assert response.status_code == 418
    assert response.headers["X-A"] == "1"
    assert json.loads(bytes(response.body)) == {
        "error": {"type": "t", "code": "c", "message": "m", "param": "p"}
    }
