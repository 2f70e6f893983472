"""Continuous batching with the real SmolLM2, through Kafka: joining rows, early results."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from schemas import clients
from schemas.settings import Settings
from schemas.topics import Topics
from schemas.wire import ResultMessage, Sampling, TaskMessage, decode_result, encode
from tests.conftest import make_settings
from tests.integration.harness import LOCAL, front_end, wait_live, worker

pytestmark = [pytest.mark.kafka, pytest.mark.model]

_PROMPT = "What is the capital of France? Answer in one sentence."


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    """One front end and one worker of the local model for this module."""
    # Two shared cores under other load can be very slow: a long request timeout.
    settings = make_settings(kafka_bootstrap, worker_max_batch=8, request_timeout_s=240)
    async with worker(settings, LOCAL), front_end(settings) as c:
        await wait_live(c, LOCAL)
        yield c, settings


async def _complete(client: httpx.AsyncClient, **body: object) -> tuple[dict[str, object], float]:
    payload = {"model": LOCAL, "prompt": _PROMPT, "temperature": 0, "max_tokens": 16} | body
    response = await client.post("/v1/completion", json=payload)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0], time.monotonic()


def _task(request_id: str, prompt: str, max_tokens: int) -> TaskMessage:
    sampling = Sampling(max_tokens=max_tokens, temperature=0.0, top_p=1.0)
    return TaskMessage(
        request_id=request_id,
        choice_index=0,
        model=LOCAL,
        prompt=prompt,
        sampling=sampling,
        enqueued_at=time.time(),
    )


async def test_a_short_task_finishes_while_a_long_one_generates(
    stack: tuple[httpx.AsyncClient, Settings],
) -> None:
    # Straight to Kafka, on two partitions: a worker releases results in offset order per
    # partition (worker.ledger), so two tasks of one partition would also test that order.
    _, settings = stack
    topics = Topics(settings.topic_prefix)
    results = clients.consumer(
        settings, "kc-test-results", topics.results, committed_only=True, auto_offset_reset="latest"
    )
    await results.start()
    producer = clients.producer(settings, "kc-test-tasks")
    await producer.start()
    try:
        for tp in results.assignment():
            await results.position(tp)  # resolve "latest" now, before any result is written
        long = _task(f"long-{uuid.uuid4()}", "Tell me a very long story about a dragon.", 200)
        await producer.send_and_wait(topics.requests(LOCAL), encode(long), partition=0)
        await asyncio.sleep(2.0)  # the long one is decoding by now
        short = _task(f"short-{uuid.uuid4()}", _PROMPT, 4)
        await producer.send_and_wait(topics.requests(LOCAL), encode(short), partition=1)
        arrived = await _results(results, {long.request_id, short.request_id})
    finally:
        await producer.stop()
        await results.stop()
    assert [r.request_id for r in arrived] == [short.request_id, long.request_id]
    first, last = arrived
    assert first.choice is not None and first.choice.completion_tokens == 4
    # ~200 tokens take seconds even alone; the short one did not wait for them.
    assert last.choice is not None and last.choice.completion_tokens > 60


async def _results(consumer: AIOKafkaConsumer, ids: set[str]) -> list[ResultMessage]:
    """The results of ``ids``, in the order they became visible."""
    arrived: list[ResultMessage] = []
    deadline = time.monotonic() + 240
    while len(arrived) < len(ids) and time.monotonic() < deadline:
        batch = await consumer.getmany(timeout_ms=500)
        for records in batch.values():
            arrived += [m for r in records if (m := decode_result(r.value)).request_id in ids]
    return arrived


async def test_greedy_output_is_the_same_alone_and_joined(
    stack: tuple[httpx.AsyncClient, Settings],
) -> None:
    client, _ = stack
    alone, _ = await _complete(client, max_tokens=24)
    # The same task again, now joining a batch that is already decoding other rows.
    others = [
        asyncio.create_task(
            _complete(client, prompt=f"Write a poem about the number {i}.", max_tokens=60)
        )
        for i in range(3)
    ]
    await asyncio.sleep(1.5)
    joined, _ = await _complete(client, max_tokens=24)
    await asyncio.gather(*others)
    for field in ("prompt_tokens", "completion_tokens"):
        assert joined["usage"][field] == alone["usage"][field]  # type: ignore[index]
    # Exact equality: rows are masked and positioned per row; see the module docs of
    # worker.decode. bf16 rounding could in principle flip a near-tie; it has not here.
    assert joined["text"] == alone["text"]
