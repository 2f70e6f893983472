"""Reading the usage ledger in tests: its totals once it has counted every committed result,
and the same totals summed from the committed results themselves."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable

from aiokafka import TopicPartition

from producer.jobs.batch.reader import scan
from producer.tenants.usagebook import UsageBook
from schemas import clients
from schemas.settings import Settings
from schemas.topics import Topics
from schemas.usage import UsageBucket
from schemas.wire import ResultMessage, decode_result

Totals = Counter[str]  # requests, failed, input_tokens, output_tokens


def totals(buckets: Iterable[UsageBucket]) -> Totals:
    """The sums of ``buckets``."""
    summed: Totals = Counter()
    for b in buckets:
        summed.update(
            requests=b.requests,
            failed=b.failed,
            input_tokens=b.input_tokens,
            output_tokens=b.output_tokens,
        )
    return summed


def summed_results(results: Iterable[ResultMessage]) -> Totals:
    """What the ledger should hold for ``results``, summed by this test's own rule: a request
    and its prompt's tokens once per prompt (choice index a multiple of n), every choice's
    completion tokens."""
    summed: Totals = Counter()
    for r in results:
        head = r.choice_index % (r.choices_per_prompt or 1) == 0
        summed.update(requests=int(head), failed=int(head and r.error is not None))
        if r.choice is not None:
            summed.update(
                input_tokens=r.choice.prompt_tokens if head else 0,
                output_tokens=r.choice.completion_tokens,
            )
    return summed


async def committed(settings: Settings, topics: list[str]) -> list[ResultMessage]:
    """Every committed result on ``topics``."""
    found: list[ResultMessage] = []
    async for records in scan(settings, topics):
        found.extend(decode_result(r.value) for r in records)
    return found


async def ledger(settings: Settings, topics: list[str], timeout_s: float = 60) -> list[UsageBucket]:
    """Every bucket of the ledger, once its cursor has passed every committed result of
    ``topics`` (read at the call: the ledger may count more, never less)."""
    producer = clients.producer(settings, "test-ledger")
    consumer = clients.consumer(settings, "test-ledger", committed_only=True)
    await producer.start()
    await consumer.start()
    try:
        partitions = [
            TopicPartition(t, p) for t in topics for p in await producer.partitions_for(t)
        ]
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
        await producer.stop()
    book = UsageBook(settings)
    await book.start()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            held = book.cursor.offsets
            behind = [
                tp for tp, end in ends.items() if held.get(f"{tp.topic}:{tp.partition}", 0) < end
            ]
            if not behind and book.ready:
                return list(book.buckets.values())
            assert time.monotonic() < deadline, f"the ledger has not counted {behind}"
            await asyncio.sleep(0.1)
    finally:
        await book.stop()


def results_topics(settings: Settings, *batch_ids: str) -> list[str]:
    """The results topic and the results topics of ``batch_ids``."""
    topics = Topics(settings.topic_prefix)
    return [topics.results, *(topics.batch_results(b) for b in batch_ids)]
