"""Early replies: a caller is answered before the worker's transaction commits.

The worker's flush (publish + offset commit, one transaction) is held back by the test; with
early replies the caller still gets its answer from the copy on the stream topic, and once the
flush runs the committed copy arrives exactly once and is not counted as unmatched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiokafka import TopicPartition

from schemas.kafka import ensure_topics, tail
from schemas.settings import Settings
from schemas.topics import Topics
from tests.conftest import make_settings
from tests.integration.harness import committed_results, front_end, wait_live, worker
from worker.loop import ModelWorker

pytestmark = [pytest.mark.kafka]
_BODY = {"model": ["echo", "echo"], "prompt": "early bird", "max_tokens": 4}


@contextlib.asynccontextmanager
async def holding_flushes(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[asyncio.Event]:
    """Every worker flush waits for the yielded event (set at the latest when the block ends)."""
    release = asyncio.Event()
    original = ModelWorker._flush

    async def held(self: ModelWorker) -> None:
        await release.wait()
        await original(self)

    monkeypatch.setattr(ModelWorker, "_flush", held)
    try:
        yield release
    finally:
        release.set()  # else the worker's drain would wait for ever


async def _unmatched(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    found = re.search(r"^kc_results_unmatched_total (\S+)$", text, re.MULTILINE)
    assert found, "kc_results_unmatched_total is not exported"
    return float(found.group(1))


async def _committed_for(settings: Settings, request_ids: set[str]) -> list[Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        results = [r for r in await committed_results(settings, 1.0) if r.request_id in request_ids]
        if len(results) >= 2 * len(request_ids):
            return results
    return results


async def test_answered_before_the_commit(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        worker(settings, "echo"),
        front_end(settings) as client,
        holding_flushes(monkeypatch) as held_flush,
    ):
        await wait_live(client, "echo")
        answers = [
            await asyncio.wait_for(client.post("/v1/completion", json=_BODY), 10) for _ in range(3)
        ]
        assert [a.status_code for a in answers] == [200, 200, 200], answers[0].text
        ids = {a.json()["id"] for a in answers}
        assert [len(a.json()["choices"]) for a in answers] == [2, 2, 2]
        assert not [r for r in await committed_results(settings, 1.0) if r.request_id in ids], (
            "the results were committed although every flush was held"
        )
        held_flush.set()
        committed = await _committed_for(settings, ids)
        assert sorted((r.request_id, r.choice_index) for r in committed) == sorted(
            (i, c) for i in ids for c in (0, 1)
        ), "each committed exactly once"
        await asyncio.sleep(0.5)  # the front end reads the committed copies too
        assert await _unmatched(client) == 0


async def test_strict_mode_answers_only_from_committed_results(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    strict = settings.model_copy(update={"early_replies": False})
    async with (
        worker(strict, "echo"),
        front_end(strict) as client,
        holding_flushes(monkeypatch) as held_flush,
    ):
        await wait_live(client, "echo")
        call = asyncio.ensure_future(client.post("/v1/completion", json=_BODY))
        done, _ = await asyncio.wait([call], timeout=3)
        assert not done, "answered while the commit was held, with KC_EARLY_REPLIES=false"
        held_flush.set()
        response = await asyncio.wait_for(call, 10)
        assert response.status_code == 200, response.text
        assert await _unmatched(client) == 0


async def test_new_topics_are_ready_when_ensure_topics_returns(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Clients that look up offsets of a topic whose leader is not elected yet log errors
    # ("not leader for partition") and retry; ensure_topics waits for the leaders instead.
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            fresh = make_settings(kafka_bootstrap, results_partitions=8)
            await ensure_topics(fresh, ["echo"])
            topics = Topics(fresh.topic_prefix)
            partitions = [TopicPartition(topics.results, p) for p in range(8)]
            consumer = await tail(fresh, "kc-test-tail", *partitions)
            await consumer.stop()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
