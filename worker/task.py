"""What a worker handles: a task taken from Kafka, and the outcome decided for it."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.tracing import RecordHeaders
from schemas.wire import ErrorCode, TaskMessage


@dataclass(frozen=True, slots=True)
class Task:
    """A decoded task with the coordinates of the record it came from."""

    message: TaskMessage
    topic: str
    partition: int
    offset: int
    received_at: float
    enqueued_at: float  # the task's own stamp, else its record's timestamp (epoch seconds)
    headers: RecordHeaders = ()  # the record's, with the trace it continues (schemas.tracing)


@dataclass(frozen=True, slots=True)
class Completion:
    """A backend produced text."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    prediction_time_ms: int


@dataclass(frozen=True, slots=True)
class Failure:
    """A backend could not produce text; the caller gets this as an error result."""

    code: ErrorCode
    message: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """The record is not a task of ours; it goes to the DLQ as it came, with the reason."""

    reason: str
    source: str  # topic:partition:offset of the original record
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Delta:
    """More text of a streaming task, yielded before its final outcome (never committed)."""

    text: str


Outcome = Completion | Failure
Event = Outcome | Delta
