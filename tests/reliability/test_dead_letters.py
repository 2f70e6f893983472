"""Records that are not tasks of ours, on a request topic: each goes to the DLQ with its reason,
the worker's ``kc_worker_dead_letters_total`` counts it, and the worker goes on serving."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from schemas.registry import load_registry
from schemas.settings import Settings
from schemas.topics import Topics
from schemas.wire import DLQ_REASON, DLQ_SOURCE, Sampling, TaskMessage, encode
from tests.integration.harness import dead_letters, front_end, send_raw, spec_body, wait_live
from worker.service import serve_models

pytestmark = [pytest.mark.kafka]


def _bad_records() -> dict[bytes, tuple[bytes | None, str]]:
    """Key -> (value, a word its DLQ reason must contain)."""
    task = TaskMessage(
        request_id="r1",
        choice_index=0,
        model="echo",
        prompt="hi",
        sampling=Sampling(max_tokens=2, temperature=0, top_p=1),
        enqueued_at=time.time(),
    )
    v2 = encode(task).replace(b'"v":1', b'"v":2')
    other_model = encode(task.model_copy(update={"model": "smollm2-135m-instruct"}))
    return {
        b"garbage": (b"\xff\xfe\x00 not json at all", "Invalid JSON"),
        b"wrong-schema": (b'{"hello": "world"}', "request_id"),
        b"wrong-version": (v2, "v"),
        b"wrong-model": (other_model, "smollm2-135m-instruct"),
        b"tombstone": (None, "tombstone"),
    }


@contextlib.asynccontextmanager
async def _worker(settings: Settings, registry: CollectorRegistry) -> AsyncIterator[None]:
    stopping = asyncio.Event()
    task = asyncio.create_task(
        serve_models(["echo"], settings, load_registry(), stopping, registry)
    )
    try:
        yield
    finally:
        stopping.set()
        await task


async def test_bad_records_are_dead_lettered_counted_and_survived(settings: Settings) -> None:
    bad = _bad_records()
    registry = CollectorRegistry()
    async with _worker(settings, registry), front_end(settings) as client:
        await wait_live(client, "echo")
        topic = Topics(settings.topic_prefix).requests("echo")
        await send_raw(settings, topic, [(value, key) for key, (value, _) in bad.items()])
        records = await dead_letters(settings, len(bad))
        after = await client.post("/v1/completion", json=spec_body(model="echo"))
        dead = registry.get_sample_value("kc_worker_dead_letters_total", {"model": "echo"})
        done = registry.get_sample_value(
            "kc_worker_tasks_total", {"model": "echo", "outcome": "dead_lettered"}
        )
    assert sorted(r.key for r in records) == sorted(bad)
    for record in records:
        headers = dict(record.headers)
        value, word = bad[record.key]
        assert record.value == value, "the DLQ keeps the original value"
        assert word in headers[DLQ_REASON].decode(), (record.key, headers[DLQ_REASON])
        assert (
            headers[DLQ_SOURCE].decode().startswith(Topics(settings.topic_prefix).requests("echo"))
        )
    assert dead == len(bad) and done == len(bad)
    assert after.status_code == 200, after.text
