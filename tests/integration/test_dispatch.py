"""The dispatcher on a real broker: fair share across keys, cancel at once, a takeover that
continues from the committed cursor, and what the dispatching front end shows.

The worker is in-process around a paced backend (a fixed time per batch of tasks), so a big
batch is mid-run for as long as a test needs, whatever the machine.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from producer.jobs.batch.dispatch import Dispatcher
from producer.jobs.batch.output import batch_results
from producer.jobs.batch.reader import scan
from producer.jobs.batch.service import BatchService
from producer.jobs.batch.session import opened
from schemas.batch import BatchCreate, BatchRecord
from schemas.registry import load_registry
from schemas.settings import Settings
from schemas.topics import Topics
from schemas.wire import decode_task
from tests.integration.harness import ScriptedBackend, backend_worker, dispatching, front_end
from worker.task import Completion, Delta, Outcome, Task

pytestmark = [pytest.mark.kafka]
ECHO = load_registry().get("echo")


class Paced(ScriptedBackend):
    """Answers every task of a batch after ``seconds``; records which lines it was given."""

    capacity = 4

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.seen: list[str] = []

    async def run(self, tasks: Sequence[Task]) -> AsyncIterator[tuple[Task, Outcome | Delta]]:
        self.seen += [f"{t.message.job_id}/{t.message.custom_id}" for t in tasks]
        await asyncio.sleep(self.seconds)
        for task in tasks:
            yield task, Completion("ok", "length", 1, 1, 1)


def lines(n: int, prefix: str = "l") -> bytes:
    body = {"model": "echo", "prompt": "hello", "max_tokens": 1}
    rows = [
        {"custom_id": f"{prefix}{i}", "method": "POST", "url": "/v1/completion", "body": body}
        for i in range(n)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


async def create(service: BatchService, key: str, n: int, prefix: str = "l") -> BatchRecord:
    upload = await service.upload(key, "in.jsonl", "batch", lines(n, prefix))
    body = BatchCreate(input_file_id=upload.id, endpoint="/v1/completion", completion_window="24h")
    return await service.create(key, body)


async def until(check: Any, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def settings_of(settings: Settings, window: int) -> Settings:
    """A fixed window: the tests' arithmetic does not depend on how fast the machine is."""
    fixed = {"bulk_window_min": window, "bulk_window_max": window}
    return settings.model_copy(update=fixed)


async def test_a_small_batch_of_one_key_does_not_wait_behind_a_big_one(
    settings: Settings,
) -> None:
    settings = settings_of(settings, 8)
    backend = Paced(0.05)
    async with (
        opened(settings) as service,
        dispatching(settings),
        backend_worker(settings, ECHO, backend),
    ):
        big = await create(service, "key-a", 600, "a")
        await until(lambda: service.counts(service.book.batches[big.id]).completed >= 16, "A")
        small = await create(service, "key-b", 8, "b")
        await until(lambda: service.book.batches[small.id].status == "completed", "B", 120)
        left = big.total - service.counts(service.book.batches[big.id]).completed
    # Before: B's lines were published after all of A's and ran after them (left == 0).
    print(f"\nB's 8 lines completed with {left} of A's 600 lines still to run")
    assert left >= 500, left
    order = [s.split("/")[1] for s in backend.seen]
    first_b = next(i for i, cid in enumerate(order) if cid.startswith("b"))
    # Behind what A had handed out when the dispatcher saw B: a window or two, not 600 lines.
    assert first_b < 60, order[: first_b + 1]


async def test_within_one_key_batches_go_oldest_first(settings: Settings) -> None:
    # One request partition: the worker then meets the tasks in the order the dispatcher
    # published them (across two partitions its fetches could interleave them).
    settings = settings_of(settings, 4).model_copy(update={"request_partitions": 1})
    backend = Paced(0.02)
    async with (
        opened(settings) as service,
        dispatching(settings),
        backend_worker(settings, ECHO, backend),
    ):
        first = await create(service, "key-a", 20, "x")
        second = await create(service, "key-a", 5, "y")
        await until(lambda: service.book.batches[second.id].status == "completed", "both")
    order = [s.split("/")[0] for s in backend.seen]
    assert order.index(second.id) >= 20 and order.count(first.id) == 20, order


async def test_cancel_hands_out_no_more_lines(settings: Settings) -> None:
    settings = settings_of(settings, 4)
    backend = Paced(0.2)
    async with (
        opened(settings) as service,
        dispatching(settings),
        backend_worker(settings, ECHO, backend),
    ):
        batch = await create(service, "key-a", 100)
        await until(lambda: service.counts(service.book.batches[batch.id]).completed >= 6, "6")
        await service.cancel("key-a", batch.id)
        cursor = service.book.cursors[batch.id]
        handed = cursor.next_line
        await until(lambda: service.book.batches[batch.id].status == "cancelled", "cancel")
        ended = service.book.batches[batch.id]
    ran = len(backend.seen)
    print(f"\ncancelled with {handed} of 100 lines handed out; the model ran {ran}")
    # In flight at the cancel, and what the dispatcher handed out before it read the record.
    assert ran <= handed + 8, (ran, handed)
    assert ended.counts is not None and ended.counts.completed == ran
    answered = Counter([r.custom_id async for r, _ in batch_results(settings, batch.id)])
    assert len(answered) == 100 and set(answered.values()) == {1}
    assert ended.error_file is not None and ended.error_file.lines == 100 - ran
    # Not merely skipped by the workers: the lines after the cancel never went to the lane.
    assert await count_bulk(settings, batch.id) <= handed + 8


async def test_a_takeover_continues_from_the_committed_cursor(settings: Settings) -> None:
    settings = settings_of(settings, 8)
    backend = Paced(0.05)
    async with opened(settings) as service:
        first = Dispatcher(settings, service.registry, service.book)
        second = Dispatcher(settings, service.registry, service.book)
        await first.start()
        await second.start()
        stopped = False
        try:
            async with backend_worker(settings, ECHO, backend):
                await until(lambda: first.leading or second.leading, "a dispatcher")
                leader, other = (first, second) if first.leading else (second, first)
                batch = await create(service, "key-a", 200)
                await until(
                    lambda: service.counts(service.book.batches[batch.id]).completed >= 40, "40"
                )
                await leader.stop()
                stopped = True
                await until(lambda: other.leading, "the takeover", 30)
                await until(lambda: service.book.batches[batch.id].status == "completed", "end")
        finally:
            await other.stop()
            if not stopped:
                await leader.stop()
    sent: Counter[tuple[str | None, int]] = Counter()
    async for records in scan(settings, [Topics(settings.topic_prefix).bulk("echo")]):
        sent.update(
            (t.custom_id, t.choice_index)
            for t in map(decode_task, (r.value for r in records))
            if t.job_id == batch.id
        )
    assert len(sent) == 200 and set(sent.values()) == {1}, sent.most_common(3)


async def test_the_dispatching_front_end_shows_lines_per_key(settings: Settings) -> None:
    settings = settings_of(settings, 4)
    backend = Paced(0.2)
    async with (
        front_end(settings) as client,
        opened(settings) as service,
        backend_worker(settings, ECHO, backend),
    ):
        batch = await create(service, "key-a", 50)
        await until(lambda: service.counts(service.book.batches[batch.id]).completed >= 4, "4")
        # The dispatcher reads results on its own consumer: its gauges catch up with the
        # batch's count a moment later, so read them until they show the first answers.
        shown: dict[str, float] = {}

        async def answered() -> bool:
            shown.clear()
            shown.update(
                (line.split(" ")[0], float(line.rsplit(" ", 1)[1]))
                for line in (await client.get("/metrics")).text.splitlines()
                if line.startswith(("kc_bulk_lines_waiting{", "kc_bulk_lines_in_flight{"))
            )
            seen = shown.get('kc_bulk_lines_waiting{key="key-a"}', 50)
            return seen + shown.get('kc_bulk_lines_in_flight{key="key-a"}', 0) <= 50 - 4

        deadline = time.monotonic() + 60
        while not await answered():
            assert time.monotonic() < deadline, f"the gauges never showed 4 answers: {shown}"
            await asyncio.sleep(0.05)
        text = (await client.get("/metrics")).text
        await service.cancel("key-a", batch.id)
    flying = shown['kc_bulk_lines_in_flight{key="key-a"}']
    waiting = shown['kc_bulk_lines_waiting{key="key-a"}']
    assert 0 < flying <= 4 and 0 < waiting <= 50 - 4 - flying, shown
    assert shown['kc_bulk_lines_waiting{key="other"}'] == 0, shown
    assert 'kc_bulk_window_tasks{model="echo"} 4.0' in text


async def test_lines_of_a_batch_past_its_window_are_answered_not_handed_out(
    settings: Settings,
) -> None:
    async with opened(settings) as service:
        upload = await service.upload("key-a", "in.jsonl", "batch", lines(20))
        body = BatchCreate(
            input_file_id=upload.id, endpoint="/v1/completion", completion_window="24h"
        )
        batch = await service.create("key-a", body, window_s=0.5)
        await asyncio.sleep(1.6)  # no dispatcher yet: the window passes
        async with dispatching(settings):
            await until(lambda: service.book.batches[batch.id].status == "expired", "expiry")
    answered = [r async for r, _ in batch_results(settings, batch.id)]
    assert sorted(r.custom_id or "" for r in answered) == sorted(f"l{i}" for i in range(20))
    assert {r.error.code for r in answered if r.error} == {"deadline_exceeded"}
    assert await count_bulk(settings, batch.id) == 0


async def count_bulk(settings: Settings, batch_id: str) -> int:
    total = 0
    async for records in scan(settings, [Topics(settings.topic_prefix).bulk("echo")]):
        total += sum(1 for r in records if decode_task(r.value).job_id == batch_id)
    return total
