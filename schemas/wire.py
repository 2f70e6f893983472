"""Versioned Kafka wire messages: a task (request topic), a result (results topic).

Every message carries ``v``; a reader refuses a version it does not know (the record goes to
the DLQ with that reason) rather than guessing. Records are UTF-8 JSON. A dead-lettered record
keeps its original key and value; the reason travels in headers (see ``DLQ_HEADERS``).
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.api import CompletionRequest
from schemas.errors import WireError
from schemas.openai import ChatCompletionsRequest, CompletionsRequest

WIRE_VERSION: Literal[1] = 1
DLQ_REASON = "kc-dlq-reason"
DLQ_SOURCE = "kc-dlq-source"
DLQ_HEADERS = (DLQ_REASON, DLQ_SOURCE)
# The stream topic carries two kinds of record: text deltas (no header) and early copies of
# results, marked with this header. See ``worker.side_channel`` and ``producer.frontend.replies``.
KIND = "kc-kind"
KIND_RESULT = b"result"

Lane = Literal["interactive", "bulk"]
OpenAIBody = CompletionsRequest | ChatCompletionsRequest
M = TypeVar("M", bound=BaseModel)
ErrorCode = Literal[
    "deadline_exceeded",
    "backend_error",
    "invalid_request",
    "unauthorized",
    "rate_limited",
    "unavailable",
    "cancelled",
]


class Sampling(BaseModel):
    """Generation parameters of one task, already validated at the edge."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tokens: Annotated[int, Field(ge=1)]
    temperature: Annotated[float, Field(ge=0.0, le=2.0)]  # 0..1 on /v1/completion, 0..2 OpenAI
    top_p: Annotated[float, Field(ge=0.0, le=1.0)]
    stop: tuple[str, ...] = ()
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0
    # The caller's seed (OpenAI's parameter): the same seed, prompt and parameters give the
    # same text on the same worker build; None seeds each task by its request id.
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None

    @classmethod
    def of_request(cls, body: CompletionRequest) -> Sampling:
        """The generation parameters of a ``/v1/completion`` body (or a job line)."""
        return cls(
            max_tokens=body.max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            stop=tuple(body.stop or ()),
            presence_penalty=body.presence_penalty,
            frequency_penalty=body.frequency_penalty,
        )

    @classmethod
    def of_openai(cls, body: OpenAIBody, max_tokens: int) -> Sampling:
        """The generation parameters of an OpenAI completions or chat body."""
        return cls(
            max_tokens=max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            stop=body.stops,
            presence_penalty=body.presence_penalty,
            frequency_penalty=body.frequency_penalty,
            seed=body.seed,
        )


class ChatMessage(BaseModel):
    """One message of a chat conversation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["system", "user", "assistant", "developer"]
    content: str


class TaskMessage(BaseModel):
    """One unit of work: one prompt for one model, the answer of one choice index."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = WIRE_VERSION
    request_id: Annotated[str, Field(min_length=1, max_length=128)]
    choice_index: Annotated[int, Field(ge=0)]
    model: str
    prompt: str
    messages: tuple[ChatMessage, ...] | None = None  # a chat task; `prompt` is then unused
    stream: bool = False  # the caller wants text deltas as they are generated
    sampling: Sampling
    enqueued_at: float
    deadline: float | None = None
    reply_partition: Annotated[int, Field(ge=0)] | None = None
    key_id: str | None = None
    lane: Lane = "interactive"
    job_id: str | None = None
    custom_id: str | None = None
    # A batch line's task: its result goes to the batch's own results topic, and the line
    # is answered once all of its ``line_tasks`` tasks (choices) are.
    results_topic: str | None = None
    line_tasks: Annotated[int, Field(ge=1)] | None = None
    # The line's ``n``: its tasks hold n copies of each prompt in a row (OpenAI's usage counts
    # each prompt once).
    choices_per_prompt: Annotated[int, Field(ge=1)] | None = None


class ChoiceResult(BaseModel):
    """A successful generation."""

    model_config = ConfigDict(frozen=True)

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    prediction_time_ms: int
    created: int


class TaskError(BaseModel):
    """Why a task produced no text."""

    model_config = ConfigDict(frozen=True)

    code: ErrorCode
    message: str


class ResultMessage(BaseModel):
    """The outcome of one task: exactly one of ``choice`` and ``error`` is set."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = WIRE_VERSION
    request_id: str
    choice_index: int
    model: str
    worker_id: str
    choice: ChoiceResult | None = None
    error: TaskError | None = None
    job_id: str | None = None
    custom_id: str | None = None
    line_tasks: int | None = None
    choices_per_prompt: int | None = None
    queued_ms: int = 0

    @model_validator(mode="after")
    def _one_of_choice_or_error(self) -> ResultMessage:
        if (self.choice is None) == (self.error is None):
            raise ValueError("a result carries exactly one of `choice` and `error`")
        return self


class StreamChunk(BaseModel):
    """A text delta of a streaming task; ``seq`` counts from 0 per (request, choice)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = WIRE_VERSION
    request_id: str
    choice_index: int
    seq: int
    delta: str


class CancelMessage(BaseModel):
    """The caller of a request went away: stop working on it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = WIRE_VERSION
    request_id: str


def encode(message: BaseModel) -> bytes:
    """Serialise a wire message."""
    return message.model_dump_json(exclude_none=True).encode()


def decode_task(raw: bytes | None) -> TaskMessage:
    """Parse a request-topic record, or raise WireError saying why it is not a task."""
    return _decode(TaskMessage, raw)


def decode_result(raw: bytes | None) -> ResultMessage:
    """Parse a results-topic record, or raise WireError saying why it is not a result."""
    return _decode(ResultMessage, raw)


def decode_chunk(raw: bytes | None) -> StreamChunk:
    """Parse a stream-topic record, or raise WireError."""
    return _decode(StreamChunk, raw)


def decode_cancel(raw: bytes | None) -> CancelMessage:
    """Parse a cancel-topic record, or raise WireError."""
    return _decode(CancelMessage, raw)


def _decode(model: type[M], raw: bytes | None) -> M:
    if raw is None:
        raise WireError("empty record value (tombstone)")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "record"
        raise WireError(f"not a v{WIRE_VERSION} {model.__name__}: {where}: {first['msg']}") from exc
