"""The worker's decisions without a broker: each fetched record, and who gets an early reply."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from schemas.metrics import WorkerMetrics
from schemas.registry import load_registry
from schemas.settings import Settings
from schemas.tracing import Headers
from schemas.wire import ResultMessage, encode
from tests.unit.factories import task, task_message
from worker.admission import Expired, Fetched, admit, replies_early
from worker.backends.echo import EchoBackend
from worker.loop import ModelWorker
from worker.publish import result_message
from worker.task import DeadLetter, Failure, Task

NOW = 1_700_000_100.0
TOPIC = "completions.requests.echo"


def _record(value: bytes | None, key: bytes | None = b"req-1", offset: int = 7) -> Fetched:
    return Fetched(TOPIC, 3, offset, key, value)


def _task_bytes(**overrides: Any) -> bytes:
    return encode(task_message(**overrides))


@pytest.mark.parametrize("deadline", [None, NOW + 0.001, NOW + 60])
def test_a_task_of_this_model_within_its_deadline_is_run(deadline: float | None) -> None:
    decision = admit(_record(_task_bytes(deadline=deadline)), "echo", NOW)
    assert isinstance(decision, Task)
    assert (decision.topic, decision.partition, decision.offset) == (TOPIC, 3, 7)
    assert decision.received_at == NOW
    assert decision.message.deadline == deadline


@pytest.mark.parametrize("late_by", [0.001, 1.0, 3600.0])
def test_an_expired_task_is_answered_deadline_exceeded_and_never_run(late_by: float) -> None:
    decision = admit(_record(_task_bytes(deadline=NOW - late_by)), "echo", NOW)
    assert isinstance(decision, Expired)
    assert decision.failure.code == "deadline_exceeded"
    assert decision.task.message.request_id == "req-1"
    assert decision.task.offset == 7


def test_a_task_of_another_model_is_dead_lettered_with_both_names() -> None:
    value = _task_bytes(model="gpt-4")
    decision = admit(_record(value), "echo", NOW)
    assert isinstance(decision, DeadLetter)
    assert "'gpt-4'" in decision.reason and "'echo'" in decision.reason
    assert decision.source == f"{TOPIC}:3:7"
    assert (decision.key, decision.value) == (b"req-1", value)  # the original bytes, kept


@pytest.mark.parametrize(
    ("stamped", "timestamp_ms", "enqueued"),
    [
        (1_700_000_050.0, 1_700_000_090_000, 1_700_000_050.0),  # the producer's stamp wins
        (None, 1_700_000_090_000, 1_700_000_090.0),  # else the record's timestamp
        (None, -1, NOW),  # a record without one: queued for no time
    ],
)
def test_a_task_is_enqueued_at_its_stamp_else_its_record_timestamp(
    stamped: float | None, timestamp_ms: int, enqueued: float
) -> None:
    record = Fetched(TOPIC, 3, 7, b"k", _task_bytes(enqueued_at=stamped), timestamp_ms)
    decision = admit(record, "echo", NOW)
    assert isinstance(decision, Task)
    assert decision.enqueued_at == enqueued
    assert decision.message.enqueued_at == stamped
    result = result_message(decision, Failure("cancelled", "gone"), "w-1")
    assert result.queued_ms == round((NOW - enqueued) * 1000), "the result's queue time"


def test_an_expired_task_of_another_model_is_still_dead_lettered() -> None:
    decision = admit(_record(_task_bytes(model="gpt-4", deadline=NOW - 5)), "echo", NOW)
    assert isinstance(decision, DeadLetter)


_GOOD = json.loads(_task_bytes())


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\xff\xfe not json", "json"),
        (json.dumps({"hello": "world"}).encode(), "request_id"),
        (json.dumps(_GOOD | {"v": 2}).encode(), "v"),
        (json.dumps(_GOOD | {"surprise": 1}).encode(), "surprise"),
        (None, "tombstone"),
    ],
)
def test_records_that_are_not_tasks_are_dead_lettered_with_the_reason(
    value: bytes | None, reason: str
) -> None:
    decision = admit(_record(value, key=None, offset=11), "echo", NOW)
    assert isinstance(decision, DeadLetter)
    assert reason in decision.reason.lower()
    assert decision.source == f"{TOPIC}:3:11"
    assert decision.value == value


def test_early_replies_go_only_to_a_waiting_caller_and_only_when_on() -> None:
    waiting = task(task_message(reply_partition=2))
    bulk = task(task_message(reply_partition=None, lane="bulk", job_id="j", custom_id="c"))
    assert replies_early(waiting, True)
    assert not replies_early(waiting, False)
    assert not replies_early(bulk, True)
    assert not replies_early(bulk, False)


class _Streamer:
    """Records what the worker would put on the stream topic."""

    def __init__(self) -> None:
        self.replies: list[tuple[str, ResultMessage]] = []

    async def reply(self, t: Task, result: ResultMessage, trace: Headers | None = None) -> None:
        self.replies.append((t.message.request_id, result))

    async def send(self, t: Task, text: str) -> None:
        raise AssertionError("no deltas expected")

    def forget(self, t: Task) -> None:
        pass


@pytest.mark.parametrize("early", [True, False])
async def test_the_worker_sends_each_waiting_callers_result_early_when_on(
    early: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = load_registry().get("echo")
    settings = Settings(early_replies=early, worker_metrics_port=0)
    metrics = WorkerMetrics.create(CollectorRegistry())
    streamer = _Streamer()
    monkeypatch.setattr("worker.loop.Streamer", lambda *_: streamer)
    worker = ModelWorker(spec, EchoBackend(spec), settings, metrics, "w-test")
    waiting = task(task_message(request_id="waits", reply_partition=1), offset=0)
    bulk = task(task_message(request_id="bulk", lane="bulk", job_id="j", custom_id="c"), offset=1)
    await worker._run([waiting, bulk])
    if not early:
        assert streamer.replies == []
        return
    assert [rid for rid, _ in streamer.replies] == ["waits"]
    result = streamer.replies[0][1]
    assert (result.request_id, result.worker_id) == ("waits", "w-test")
    assert result.choice is not None and result.choice.text.startswith("Once upon")


async def test_the_worker_hands_the_backend_only_live_tasks_of_its_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = load_registry().get("echo")
    monkeypatch.setattr("worker.loop.Streamer", lambda *_: _Streamer())
    metrics = WorkerMetrics.create(CollectorRegistry())
    worker = ModelWorker(spec, EchoBackend(spec), Settings(worker_metrics_port=0), metrics, "w")
    tp = TopicPartition(TOPIC, 0)
    now = time.time()
    records = [
        _task_bytes(request_id="live", deadline=now + 60),
        _task_bytes(request_id="late", deadline=now - 1),
        _task_bytes(request_id="other", model="gpt-4"),
        b"garbage",
    ]
    taken = [
        worker._admit(tp, SimpleNamespace(offset=i, key=None, value=v, timestamp=-1, headers=()))
        for i, v in enumerate(records)
    ]
    assert [t.message.request_id if t else None for t in taken] == ["live", None, None, None]
    # The expired task is answered (decided) at once; only the live one is still in flight.
    assert worker._ledger.undecided() == 1
