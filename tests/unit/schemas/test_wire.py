"""The Kafka wire contract: round trips, and a WireError saying why a record is not ours."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from schemas.errors import WireError
from schemas.wire import (
    WIRE_VERSION,
    ChoiceResult,
    ResultMessage,
    TaskError,
    decode_result,
    decode_task,
    encode,
)
from tests.unit.factories import error_result, ok_result, sampling, task_message


def test_task_round_trip_keeps_every_field() -> None:
    message = task_message(
        request_id="9f0c-req",
        choice_index=3,
        model="gpt-4",
        prompt="Üñíçødé prompt\nwith lines",
        sampling=sampling(
            max_tokens=50,
            temperature=0.7,
            top_p=0.8,
            stop=(".", "\n\n"),
            presence_penalty=0.5,
            frequency_penalty=-0.5,
        ),
        deadline=1_700_000_060.0,
        reply_partition=5,
        key_id="0123456789abcdef",
        lane="bulk",
        job_id="job-1",
        custom_id="c-1",
    )
    assert decode_task(encode(message)) == message


def test_task_round_trip_with_defaults() -> None:
    message = task_message()
    decoded = decode_task(encode(message))
    assert decoded == message
    assert decoded.v == WIRE_VERSION == 1
    assert decoded.lane == "interactive"


def test_encode_is_utf8_json_carrying_the_version_and_leaving_out_nones() -> None:
    raw = encode(task_message(prompt="é"))
    body = json.loads(raw.decode("utf-8"))
    assert body["v"] == 1
    assert body["prompt"] == "é"
    assert "deadline" not in body
    assert "key_id" not in body


def test_result_round_trip_success() -> None:
    message = ok_result(2, "llama-2-7b", text="and then", prompt_tokens=7, completion_tokens=9)
    assert decode_result(encode(message)) == message


def test_result_round_trip_error() -> None:
    message = error_result(1, "gpt-4", "rate_limited", "slow down")
    decoded = decode_result(encode(message))
    assert decoded == message
    assert decoded.error == TaskError(code="rate_limited", message="slow down")
    assert decoded.choice is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"garbage", "JSON"),
        (b"\xff\xfe\x00\x81", "JSON"),
        (b'{"v": 1, "prompt": "\xff"}', "JSON"),
        (b"", "JSON"),
        (b"[1, 2, 3]", "object"),
        (b'"a string"', "object"),
    ],
    ids=["garbage", "invalid-utf8", "invalid-utf8-in-string", "empty", "array", "string"],
)
def test_decode_task_refuses_what_is_not_a_task(raw: bytes, expected: str) -> None:
    with pytest.raises(WireError) as info:
        decode_task(raw)
    assert "TaskMessage" in str(info.value)
    assert expected in str(info.value)
    assert isinstance(info.value.__cause__, ValidationError)


def test_decode_task_names_a_missing_field() -> None:
    body = json.loads(encode(task_message()))
    del body["request_id"]
    with pytest.raises(WireError, match="request_id"):
        decode_task(json.dumps(body).encode())


def test_decode_task_names_a_nested_bad_field() -> None:
    body = json.loads(encode(task_message()))
    body["sampling"]["temperature"] = 7
    with pytest.raises(WireError, match=r"sampling\.temperature"):
        decode_task(json.dumps(body).encode())


def test_decode_task_refuses_an_unknown_version() -> None:
    body = json.loads(encode(task_message()))
    body["v"] = 2
    with pytest.raises(WireError) as info:
        decode_task(json.dumps(body).encode())
    assert "v1" in str(info.value)
    assert "v:" in str(info.value)


def test_decode_task_refuses_unknown_fields() -> None:
    body = json.loads(encode(task_message()))
    body["surprise"] = True
    with pytest.raises(WireError, match="surprise"):
        decode_task(json.dumps(body).encode())


def test_decode_of_a_tombstone() -> None:
    with pytest.raises(WireError, match="tombstone"):
        decode_task(None)
    with pytest.raises(WireError, match="tombstone"):
        decode_result(None)


def test_decode_result_refuses_a_task() -> None:
    with pytest.raises(WireError, match="ResultMessage"):
        decode_result(encode(task_message()))


def _choice() -> ChoiceResult:
    return ChoiceResult(
        text="t",
        finish_reason="stop",
        prompt_tokens=1,
        completion_tokens=1,
        prediction_time_ms=1,
        created=1,
    )


def test_result_needs_a_choice_or_an_error() -> None:
    # The docstring's contract: exactly one of choice and error is set. A result with neither
    # would otherwise be assembled as a success with a choice missing.
    with pytest.raises(ValidationError):
        ResultMessage(request_id="r", choice_index=0, model="echo", worker_id="w")


def test_result_cannot_carry_both_a_choice_and_an_error() -> None:
    with pytest.raises(ValidationError):
        ResultMessage(
            request_id="r",
            choice_index=0,
            model="echo",
            worker_id="w",
            choice=_choice(),
            error=TaskError(code="backend_error", message="x"),
        )
