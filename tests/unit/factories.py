"""Small builders of wire messages and tasks shared by the unit tests."""

from __future__ import annotations

from typing import Any

from schemas.wire import ChoiceResult, ResultMessage, Sampling, TaskError, TaskMessage
from worker.task import Task


def sampling(**overrides: Any) -> Sampling:
    """A valid Sampling, with any field overridden."""
    fields: dict[str, Any] = {"max_tokens": 8, "temperature": 1.0, "top_p": 1.0}
    return Sampling(**(fields | overrides))


def task_message(**overrides: Any) -> TaskMessage:
    """A valid TaskMessage, with any field overridden."""
    fields: dict[str, Any] = {
        "request_id": "req-1",
        "choice_index": 0,
        "model": "echo",
        "prompt": "Once upon a time",
        "sampling": sampling(),
        "enqueued_at": 1_700_000_000.0,
    }
    return TaskMessage(**(fields | overrides))


def task(message: TaskMessage | None = None, offset: int = 0, partition: int = 0) -> Task:
    """A Task as the worker loop builds it from a fetched record."""
    message = message or task_message()
    return Task(
        message=message,
        topic="completions.requests.echo",
        partition=partition,
        offset=offset,
        received_at=1_700_000_000.5,
        enqueued_at=message.enqueued_at if message.enqueued_at is not None else 1_700_000_000.0,
    )


def ok_result(
    index: int,
    model: str,
    *,
    text: str = "text",
    prompt_tokens: int = 4,
    completion_tokens: int = 6,
    prediction_time_ms: int = 10,
    request_id: str = "req-1",
) -> ResultMessage:
    """A successful result of one choice."""
    choice = ChoiceResult(
        text=text,
        finish_reason="length",
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        prediction_time_ms=prediction_time_ms,
        created=1_700_000_001,
    )
    return ResultMessage(
        request_id=request_id, choice_index=index, model=model, worker_id="w-1", choice=choice
    )


def error_result(index: int, model: str, code: Any, message: str) -> ResultMessage:
    """A failed result of one choice."""
    return ResultMessage(
        request_id="req-1",
        choice_index=index,
        model=model,
        worker_id="w-1",
        error=TaskError(code=code, message=message),
    )
