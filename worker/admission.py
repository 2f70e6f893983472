"""What a worker decides for a fetched record and for a finished task, without Kafka.

A record becomes a task to run, an expired task (answered ``deadline_exceeded`` without
calling the model or the vendor), or a dead letter (garbage, wrong schema, wrong version, a
task of another model). A finished task's result also goes early to its caller when early
replies are on and somebody waits for it (bulk tasks carry no reply partition). The consume
loop (``worker.loop``) acts on these decisions; keeping them pure lets a unit test hold them.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass

from schemas.errors import WireError
from schemas.tracing import RecordHeaders
from schemas.wire import TaskMessage, decode_task
from worker.task import DeadLetter, Failure, Task

EXPIRED = Failure("deadline_exceeded", "the deadline passed before work began")


@dataclass(frozen=True, slots=True)
class Expired:
    """A task not worth running (its deadline passed, its batch was cancelled): answered."""

    task: Task
    failure: Failure = EXPIRED


@dataclass(frozen=True, slots=True)
class Fetched:
    """A record as the consumer handed it over, with where it came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int = -1  # the record's timestamp; -1 when the record has none
    headers: RecordHeaders = ()


Admission = Task | Expired | DeadLetter


def admit(
    record: Fetched,
    model: str,
    now: float,
    cancelled: Container[str] = frozenset(),
    is_batch_results: Callable[[str], bool] = lambda _topic: False,
) -> Admission:
    """The decision for one record fetched from a request topic of ``model`` at ``now``.

    A task of a batch in ``cancelled`` is answered ``cancelled`` without running, as an
    expired one is; a task may name only a batch's results topic as where its result goes.
    """
    try:
        message = decode_task(record.value)
        if message.model != model:
            raise WireError(f"task for model {message.model!r} on a topic of {model!r}")
        if message.results_topic and not is_batch_results(message.results_topic):
            raise WireError(f"results_topic {message.results_topic!r} is not a batch's")
    except WireError as exc:
        source = f"{record.topic}:{record.partition}:{record.offset}"
        return DeadLetter(str(exc), source, record.key, record.value)
    enqueued = _enqueued(message, record, now)
    task = Task(
        message, record.topic, record.partition, record.offset, now, enqueued, record.headers
    )
    if message.deadline is not None and message.deadline < now:
        return Expired(task)
    if message.job_id is not None and message.job_id in cancelled:
        return Expired(task, Failure("cancelled", f"batch {message.job_id} was cancelled"))
    return task


def _enqueued(message: TaskMessage, record: Fetched, now: float) -> float:
    """When the task was produced: its own ``enqueued_at``, else its record's timestamp."""
    if message.enqueued_at is not None:
        return message.enqueued_at
    return record.timestamp_ms / 1000 if record.timestamp_ms >= 0 else now


def replies_early(task: Task, early_replies: bool) -> bool:
    """Whether the task's result also goes at once to a caller waiting for it."""
    return early_replies and task.message.reply_partition is not None
