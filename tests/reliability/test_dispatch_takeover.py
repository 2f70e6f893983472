"""Two front ends, one dispatching: SIGKILL it mid-batch and the other takes over from the
committed cursor. Each line goes to the bulk lane once, whoever handed it out, and the batch
ends with each custom_id once."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from devstack.process import free_port

from producer.jobs.batch.output import batch_results
from producer.jobs.batch.reader import scan
from producer.jobs.batch.session import opened
from schemas.settings import Settings
from schemas.topics import Topics
from schemas.wire import decode_task
from tests.integration.harness import backend_worker, process_env
from tests.integration.test_dispatch import ECHO, Paced, create, until
from tests.reliability.support import process, wait_ready

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]
LINES = 300
_LEADS = 'kc_bulk_lines_waiting{key="other"}'  # only the dispatching front end shows it


async def leader_of(urls: list[str], timeout_s: float = 60) -> int:
    """The index of the front end that dispatches."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() < deadline:
            for i, url in enumerate(urls):
                try:
                    if _LEADS in (await client.get(f"{url}/metrics")).text:
                        return i
                except httpx.TransportError:
                    continue
            await asyncio.sleep(0.2)
    raise TimeoutError("no front end dispatches")


async def test_the_dispatching_front_end_sigkilled_mid_batch(
    settings: Settings, tmp_path: Path
) -> None:
    window = {"bulk_window_min": 8, "bulk_window_max": 8}
    settings = settings.model_copy(update=window | {"results_partitions": 2})
    ports = [free_port(), free_port()]
    envs = [
        process_env(settings, KC_PORT=str(port), KC_REPLY_PARTITION=str(i))
        for i, port in enumerate(ports)
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    backend = Paced(0.05)
    with (
        process(["serve"], envs[0], tmp_path / "a.log") as a,
        process(["serve"], envs[1], tmp_path / "b.log") as b,
    ):
        for url in urls:
            await wait_ready(url)
        async with opened(settings) as service, backend_worker(settings, ECHO, backend):
            batch = await create(service, "key-a", LINES)
            first = await leader_of(urls)

            def completed() -> int:
                return service.counts(service.book.batches[batch.id]).completed

            await until(lambda: completed() >= 60, "60 lines")
            killed_at = completed()
            os.kill((a, b)[first].pid, signal.SIGKILL)
            second = await leader_of([urls[1 - first]])
            await until(lambda: service.book.batches[batch.id].status == "completed", "end", 120)
    print(f"\nkilled the dispatching front end at {killed_at}/{LINES}; the other took over")
    assert second == 0 and killed_at < LINES
    sent: Counter[tuple[str | None, int]] = Counter()
    async for records in scan(settings, [Topics(settings.topic_prefix).bulk("echo")]):
        tasks = (decode_task(r.value) for r in records)
        sent.update((t.custom_id, t.choice_index) for t in tasks if t.job_id == batch.id)
    assert len(sent) == LINES and set(sent.values()) == {1}, sent.most_common(3)
    answered = Counter([r.custom_id async for r, _ in batch_results(settings, batch.id)])
    assert len(answered) == LINES and set(answered.values()) == {1}
