"""assemble: the spec's response when every choice arrived, else an error naming what failed."""

from __future__ import annotations

from uuid import uuid4

import pytest

from producer.assemble import assemble, to_choice
from schemas.api import CompletionResponse, ErrorBody, Usage
from schemas.wire import ResultMessage
from tests.unit.factories import error_result, ok_result

MODELS = ["gpt-4", "llama-2-70b", "echo"]


def _ok(results: dict[int, ResultMessage], models: list[str] = MODELS) -> CompletionResponse:
    request_id = uuid4()
    status, body = assemble(request_id, models, results, timeout_s=30)
    assert status == 200
    assert isinstance(body, CompletionResponse)
    assert body.id == request_id
    return body


def _error(
    results: dict[int, ResultMessage], models: list[str] = MODELS, timeout_s: float = 30
) -> tuple[int, ErrorBody]:
    status, body = assemble(uuid4(), models, results, timeout_s=timeout_s)
    assert isinstance(body, ErrorBody)
    return status, body


def test_to_choice_copies_the_result_and_totals_its_usage() -> None:
    choice = to_choice(ok_result(0, "echo", text="hi", prompt_tokens=3, completion_tokens=4))
    assert (choice.text, choice.model, choice.finish_reason) == ("hi", "echo", "length")
    assert choice.created == 1_700_000_001
    assert choice.usage == Usage(
        prompt_tokens=3, completion_tokens=4, total_tokens=7, prediction_time_ms=10
    )


def test_all_choices_ok_gives_200_in_index_order_with_summed_usage() -> None:
    # Results arrive in any order; the answer follows the order of ``model``.
    results = {
        2: ok_result(
            2, "echo", text="c", prompt_tokens=5, completion_tokens=1, prediction_time_ms=3
        ),
        0: ok_result(
            0, "gpt-4", text="a", prompt_tokens=5, completion_tokens=7, prediction_time_ms=100
        ),
        1: ok_result(
            1,
            "llama-2-70b",
            text="b",
            prompt_tokens=6,
            completion_tokens=20,
            prediction_time_ms=900,
        ),
    }
    body = _ok(results)
    assert [c.text for c in body.choices] == ["a", "b", "c"]
    assert [c.model for c in body.choices] == MODELS
    assert body.usage == Usage(
        prompt_tokens=16, completion_tokens=28, total_tokens=44, prediction_time_ms=1003
    )
    for c in body.choices:
        assert c.usage.total_tokens == c.usage.prompt_tokens + c.usage.completion_tokens
    assert body.created.tzinfo is not None


def test_the_same_model_twice_gives_two_choices() -> None:
    models = ["echo", "echo"]
    body = _ok({0: ok_result(0, "echo", text="x"), 1: ok_result(1, "echo", text="y")}, models)
    assert [c.text for c in body.choices] == ["x", "y"]


def test_a_missing_choice_is_a_504_with_what_arrived() -> None:
    results = {0: ok_result(0, "gpt-4", text="a"), 2: ok_result(2, "echo", text="c")}
    status, body = _error(results, timeout_s=12.5)
    assert status == 504
    error = body.error
    assert error.type == "timeout"
    assert error.code == "deadline_exceeded"
    assert [c.text for c in error.choices or []] == ["a", "c"]
    assert [(f.index, f.model, f.code) for f in error.failures or []] == [
        (1, "llama-2-70b", "deadline_exceeded")
    ]
    assert "llama-2-70b" in error.message
    assert "12.5" in error.message
    assert "1 of 3" in error.message


def test_nothing_arrived() -> None:
    status, body = _error({}, models=["gpt-4"])
    assert status == 504
    assert body.error.choices == []
    assert [f.model for f in body.error.failures or []] == ["gpt-4"]


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("invalid_request", 400),
        ("rate_limited", 429),
        ("unauthorized", 502),
        ("backend_error", 502),
        ("unavailable", 503),
        ("deadline_exceeded", 504),
    ],
)
def test_an_error_result_maps_to_its_status(code: str, status: int) -> None:
    results = {0: error_result(0, "gpt-4", code, "the vendor said no")}
    got, body = _error(results, models=["gpt-4"])
    assert got == status
    assert body.error.code == code
    assert "the vendor said no" in body.error.message
    assert "gpt-4" in body.error.message
    assert body.error.type == ("timeout" if status == 504 else "completion_failed")


def test_mixed_ok_error_and_missing_the_most_severe_status_wins() -> None:
    results = {
        0: ok_result(0, "gpt-4", text="a"),
        1: error_result(1, "llama-2-70b", "rate_limited", "slow down"),
    }
    status, body = _error(results)  # choice 2 (echo) is missing
    assert status == 504
    assert [c.text for c in body.error.choices or []] == ["a"]
    failures = body.error.failures or []
    assert [(f.index, f.model, f.code) for f in failures] == [
        (1, "llama-2-70b", "rate_limited"),
        (2, "echo", "deadline_exceeded"),
    ]
    assert body.error.code == "rate_limited"  # the first failure in choice order
    assert "2 of 3" in body.error.message
    assert "slow down" in body.error.message


def test_mixed_ok_and_errors_without_timeouts() -> None:
    results = {
        0: error_result(0, "gpt-4", "invalid_request", "bad stop"),
        1: ok_result(1, "llama-2-70b", text="b"),
        2: error_result(2, "echo", "unavailable", "gone"),
    }
    status, body = _error(results)
    assert status == 503
    assert [c.model for c in body.error.choices or []] == ["llama-2-70b"]
    assert [f.code for f in body.error.failures or []] == ["invalid_request", "unavailable"]
