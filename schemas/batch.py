"""The OpenAI Batch API's objects (files, batches), as the official SDK parses them, and the
records that keep them on Kafka.

Two kinds of model live here. HTTP shapes (``FileObject``, ``BatchObject``, the create
bodies) follow openai-python's ``types/file_object.py`` and ``types/batch.py``. Kafka records
(``FileRecord`` on the compacted files topic, ``BatchRecord`` on the compacted batches topic,
``BatchCancel``) are versioned like every wire message (``v``) and are what every front-end
instance reads back after a restart.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

BatchEndpoint = Literal["/v1/chat/completions", "/v1/completions", "/v1/completion"]
ENDPOINTS: tuple[str, ...] = ("/v1/chat/completions", "/v1/completions", "/v1/completion")
BatchStatus = Literal[
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
]
TERMINAL: frozenset[str] = frozenset({"failed", "completed", "expired", "cancelled"})
FilePurpose = Literal["batch", "batch_output"]
# What the upload's ``file`` part declares. A batch file is JSON Lines whose every line must pass
# its route's validation with a configured model, which no JSON Schema keyword can say of a
# file; the document declares the simplest file every registry accepts (one line for ``echo``,
# which needs no weights and no key), so that a client or fuzzer reading it sends such files.
UPLOAD_FILE_PATTERN = (
    r'^\{"custom_id": "[A-Za-z0-9_-]{1,64}", "method": "POST", "url": "/v1/completion", '
    r'"body": \{"model": "echo", "prompt": "[A-Za-z0-9 ]{1,64}"\}\}\n?$'
)
UPLOAD_FILE_SCHEMA: dict[str, Any] = {
    "pattern": UPLOAD_FILE_PATTERN,
    "description": (
        "JSON Lines of {custom_id, method, url, body}, each line valid for its url with a "
        "configured model; the pattern is one such file (docs/batches.md)"
    ),
}
Metadata = Annotated[dict[str, Annotated[str, Field(max_length=512)]], Field(max_length=16)]


class ChunkRef(BaseModel):
    """Where one chunk of a file's content lies on the chunks topic."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    partition: int
    offset: int


class FileRecord(BaseModel):
    """An uploaded file: what ``GET /v1/files/{id}`` shows, and where its content lies."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = 1
    id: str
    key_id: str
    filename: str
    purpose: FilePurpose
    bytes: int
    lines: int
    created_at: int
    expires_at: int | None = None
    upload: str = ""  # names the chunk keys: <id>:<upload>:<n>
    chunks: tuple[ChunkRef, ...] = ()
    # What the upload's check found, so that creating a batch of it need not read it again.
    endpoints: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    tasks: int = 0
    # Per model, the most input and output tokens of its lines: a batch's most cost.
    most_tokens: dict[str, tuple[int, int]] = Field(default_factory=dict)


class BatchMoments(BaseModel):
    """When a batch entered each of its later states (Unix seconds), as OpenAI's Batch shows."""

    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None


class RequestCounts(BaseModel):
    """``request_counts`` of a batch: lines in the input file, answered, failed."""

    model_config = ConfigDict(frozen=True)

    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchErrorItem(BaseModel):
    """One entry of ``errors.data``: why (a line of) the input file was refused."""

    model_config = ConfigDict(frozen=True)

    code: str
    message: str
    line: int | None = None
    param: str | None = None


class BatchErrors(BaseModel):
    """``errors`` of a batch that failed validation."""

    model_config = ConfigDict(frozen=True)

    object: Literal["list"] = "list"
    data: list[BatchErrorItem]


class OutputFile(BaseModel):
    """An output or error file of a batch, fixed when the batch ended (rendered on read)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    bytes: int
    lines: int


class BatchRecord(BatchMoments):
    """A batch as the service keeps it: the last record of its id on the batches topic."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = 1
    id: str
    key_id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    status: BatchStatus
    created_at: int
    expires_at: int
    output_expires_after_s: int
    total: int = 0
    tasks: int = 0
    models: tuple[str, ...] = ()
    metadata: dict[str, str] | None = None
    errors: BatchErrors | None = None
    counts: RequestCounts | None = None  # final counts, once the batch ended
    output: OutputFile | None = None
    error_file: OutputFile | None = None
    traceparent: str | None = None  # the span that created it: each line's trace links to it
    # Its lines are handed out by the dispatcher (every batch created since it exists); a batch
    # created before published all its tasks at creation, and the dispatcher leaves it alone.
    metered: bool = False
    # The most it can cost (USD), held against its key's budget until it ends.
    max_cost: float = 0.0

    def moved(self, **changes: Any) -> BatchRecord:
        """A copy with ``changes``."""
        return self.model_copy(update=changes)

    @property
    def output_expires_at(self) -> int:
        """When its output and error files stop being served."""
        return self.created_at + self.output_expires_after_s


class DispatchCursor(BaseModel):
    """How far the dispatcher has handed out a batch's lines (compacted dispatch topic).

    Written in the same transaction as the tasks it accounts for, so a dispatcher that takes
    over continues exactly where the last committed one stopped.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = 1
    batch_id: str
    next_line: int = 0  # lines [0, next_line) of the valid lines are handed out or answered
    tasks: dict[str, int] = Field(default_factory=dict)  # tasks published, by model


class BatchCancel(BaseModel):
    """A batch was cancelled: workers skip its tasks that have not started (compacted topic)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = 1
    batch_id: str
    at: float


class FileObject(BaseModel):
    """OpenAI's ``File`` object."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: FilePurpose
    status: Literal["uploaded", "processed", "error"] = "processed"
    expires_at: int | None = None
    status_details: str | None = None


class FileDeleted(BaseModel):
    """The answer of ``DELETE /v1/files/{id}``."""

    id: str
    object: Literal["file"] = "file"
    deleted: bool


class BatchObject(BatchMoments):
    """OpenAI's ``Batch`` object."""

    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    expires_at: int | None = None
    request_counts: RequestCounts
    metadata: dict[str, str] | None = None


class OutputExpiresAfter(BaseModel):
    """``output_expires_after`` of a batch: seconds after its creation."""

    model_config = ConfigDict(extra="forbid")

    anchor: Literal["created_at"]
    seconds: Annotated[int, Field(ge=3600, le=30 * 86400)]


class BatchCreate(BaseModel):
    """The body of ``POST /v1/batches``."""

    model_config = ConfigDict(extra="forbid")

    input_file_id: Annotated[str, Field(min_length=1, max_length=200)]
    endpoint: BatchEndpoint
    completion_window: Literal["24h"]
    metadata: Metadata | None = None
    output_expires_after: OutputExpiresAfter | None = None


class ListPage(BaseModel):
    """OpenAI's cursor page: ``data``, ``has_more``, ``first_id``, ``last_id``."""

    object: Literal["list"] = "list"
    data: list[Any]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None
