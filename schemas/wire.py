"""Versioned Kafka wire messages: a task (request topic), a result (results topic).

Every message carries ``v`` (1 when absent); a reader refuses a version it does not know (the
record goes to the DLQ with that reason) rather than guessing. Records are UTF-8 JSON. A
dead-lettered record keeps its original key and value; the reason travels in headers
(``DeadLetterHeaders``). These models are the public contract of the topics: their JSON Schemas
are generated into ``docs/wire/`` by ``python -m schemas.contract`` and described in
``docs/topics.md``. A task needs only ``request_id``, ``model`` and ``prompt`` so that producers
outside this codebase (kcat, Spark, Connect) can write one by hand.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, model_validator
from pydantic.config import JsonDict

from schemas.api import DEFAULT_MAX_TOKENS, CompletionRequest
from schemas.errors import WireError
from schemas.openai import ChatCompletionsRequest, CompletionsRequest

WIRE_VERSION: Literal[1] = 1
DLQ_REASON = "kc-dlq-reason"
DLQ_SOURCE = "kc-dlq-source"
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


# The contract's examples (in the JSON Schemas; the kcat test publishes the task examples).
TASK_EXAMPLE_MINIMAL: JsonDict = {
    "request_id": "job-7/line-1",
    "model": "smollm2-135m-instruct",
    "prompt": "Write a haiku about Kafka.",
}
TASK_EXAMPLE_JOB: JsonDict = {
    "v": 1,
    "request_id": "job-7/line-2",
    "model": "smollm2-135m-instruct",
    "prompt": "Name three rivers.",
    "sampling": {"max_tokens": 32, "temperature": 0.7, "top_p": 0.9, "stop": ["\n\n"]},
    "job_id": "job-7",
    "custom_id": "line-2",
}
RESULT_EXAMPLES: list[JsonValue] = [
    {
        "v": 1,
        "request_id": "job-7/line-1",
        "choice_index": 0,
        "model": "smollm2-135m-instruct",
        "worker_id": "host-0",
        "choice": {
            "text": " Logs flow like rivers",
            "finish_reason": "length",
            "prompt_tokens": 36,
            "completion_tokens": 5,
            "prediction_time_ms": 212,
            "created": 1764763200,
        },
        "queued_ms": 40,
    },
    {
        "v": 1,
        "request_id": "job-7/line-2",
        "choice_index": 0,
        "model": "smollm2-135m-instruct",
        "worker_id": "host-0",
        "error": {"code": "deadline_exceeded", "message": "the deadline passed before work began"},
        "job_id": "job-7",
        "custom_id": "line-2",
        "queued_ms": 61000,
    },
]


class Sampling(BaseModel):
    """Generation parameters of one task; the ranges are the widest any route allows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Defaults are /v1/completion's, so a hand-written task may leave ``sampling`` out.
    max_tokens: Annotated[int, Field(ge=1)] = DEFAULT_MAX_TOKENS
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = (
        1.0  # 0..1 on /v1/completion, 0..2 OpenAI
    )
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
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

    # The attribute docstrings become the fields' descriptions in docs/wire/task.schema.json.
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        use_attribute_docstrings=True,
        json_schema_extra={"examples": [TASK_EXAMPLE_MINIMAL, TASK_EXAMPLE_JOB]},
    )

    v: Literal[1] = WIRE_VERSION
    """Wire version; a reader refuses one it does not know."""
    request_id: Annotated[str, Field(min_length=1, max_length=128)]
    """Chosen by the producer, unique per task; the key of the result."""
    choice_index: Annotated[int, Field(ge=0)] = 0
    """Which choice of the request this task answers."""
    model: str
    """The public model name; must be the model of the topic the task is on."""
    prompt: str
    """The text to complete (unused when `messages` is set)."""
    messages: tuple[ChatMessage, ...] | None = None
    """A chat conversation, sent through the model's chat template."""
    stream: bool = False
    """Send text deltas as they are generated (to `reply_partition` of the stream topic)."""
    sampling: Sampling = Field(default_factory=Sampling)
    """Generation parameters; each defaults to /v1/completion's default."""
    enqueued_at: float | None = None
    """Epoch seconds the task was queued; absent, the record's timestamp."""
    deadline: float | None = None
    """Epoch seconds after which the task is answered deadline_exceeded instead of run."""
    reply_partition: Annotated[int, Field(ge=0)] | None = None
    """The results partition to answer on (a front end's, for the callers it holds)."""
    key_id: str | None = None
    """The id of the API key the request came with (never the key)."""
    lane: Lane = "interactive"
    """Which request topic our publisher picks; the worker goes by the topic it read."""
    job_id: str | None = None
    """Copied into the result, to group a job's results."""
    custom_id: str | None = None
    """Copied into the result, to join it to the producer's input line."""
    results_topic: str | None = None
    """A batch line's own results topic (the Batch API's; others leave it out)."""
    line_tasks: Annotated[int, Field(ge=1)] | None = None
    """How many tasks (choices) answer the batch line this task belongs to."""
    choices_per_prompt: Annotated[int, Field(ge=1)] | None = None
    """The request's (or batch line's) `n`: its tasks hold n copies of each prompt in a row."""


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

    model_config = ConfigDict(
        frozen=True, extra="forbid", json_schema_extra={"examples": RESULT_EXAMPLES}
    )

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
    key_id: str | None = None  # the task's key id, so a reader of results can attribute usage

    @model_validator(mode="after")
    def _one_of_choice_or_error(self) -> ResultMessage:
        if (self.choice is None) == (self.error is None):
            raise ValueError("a result carries exactly one of `choice` and `error`")
        return self


class StreamChunk(BaseModel):
    """A text delta of a streaming task; ``seq`` counts from 0 per (request, choice)."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"v": 1, "request_id": "r-1", "choice_index": 0, "seq": 0, "delta": " Once"}
            ]
        },
    )

    v: Literal[1] = WIRE_VERSION
    request_id: str
    choice_index: int
    seq: int
    delta: str


class CancelMessage(BaseModel):
    """The caller of a request went away: stop working on it."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", json_schema_extra={"examples": [{"v": 1, "request_id": "r-1"}]}
    )

    v: Literal[1] = WIRE_VERSION
    request_id: str


class DeadLetterHeaders(BaseModel):
    """The headers of a DLQ record (UTF-8 values); its key and value are the original's."""

    model_config = ConfigDict(
        frozen=True,
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {
                    DLQ_REASON: "not a v1 TaskMessage: sampling.temperature: "
                    "Input should be less than or equal to 2",
                    DLQ_SOURCE: "completions.requests.echo.bulk:3:1207",
                }
            ]
        },
    )

    reason: str = Field(alias=DLQ_REASON, description="why the record is not a task of ours")
    source: str = Field(
        alias=DLQ_SOURCE, description="topic:partition:offset of the original record"
    )

    def kafka(self) -> list[tuple[str, bytes]]:
        """The headers as the Kafka client takes them."""
        return [(DLQ_REASON, self.reason.encode()), (DLQ_SOURCE, self.source.encode())]


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
