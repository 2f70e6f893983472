"""The broker stopped and restarted under load: bulk work completes exactly once, synchronous
callers get an answer or a clear error by their deadline, nobody restarts the front end or the
worker.

The bulk load runs on the local model (slow: it is still generating when the broker stops);
synchronous callers use ``echo`` so that their answers measure the pipeline's recovery, not
how busy two shared cores are.
"""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from pathlib import Path

import httpx
import pytest
from devstack.broker import LocalBroker
from pydantic import SecretStr

from schemas.settings import Settings
from tests.conftest import API_KEY, cache_dir
from tests.integration.harness import LOCAL, front_end, process_env, spec_body, wait_live
from tests.reliability.support import await_results, bulk_tasks, new_job_id, process, publish_tasks

pytestmark = [pytest.mark.kafka, pytest.mark.model, pytest.mark.slow, pytest.mark.timeout(600)]
BULK = 64
DEADLINE_S = 15.0
OUTAGE_S = 12.0
# The answer comes at the deadline plus the time to assemble and send it.
DEADLINE_SLACK_S = 3.0


async def _caller(client: httpx.AsyncClient, stop: asyncio.Event) -> list[tuple[int, float]]:
    """Synchronous callers, one every half second, until ``stop``: (status, seconds)."""
    answers: list[tuple[int, float]] = []

    async def one() -> None:
        started = time.monotonic()
        try:
            response = await client.post(
                "/v1/completion", json=spec_body(model="echo", max_tokens=4, stop=None)
            )
            status = response.status_code
            assert status == 200 or "error" in response.json(), response.text
        except httpx.TransportError:
            status = 0
        answers.append((status, time.monotonic() - started))

    calls = []
    while not stop.is_set():
        calls.append(asyncio.create_task(one()))
        await asyncio.sleep(0.5)
    await asyncio.gather(*calls)
    return answers


async def _until_served(client: httpx.AsyncClient, timeout_s: float) -> float:
    """Seconds until a synchronous request is answered 200 again."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        response = await client.post(
            "/v1/completion", json=spec_body(model="echo", max_tokens=4, stop=None)
        )
        if response.status_code == 200:
            return time.monotonic() - started
        await asyncio.sleep(1)
    raise AssertionError(f"no 200 within {timeout_s} s of the broker's restart")


async def test_broker_restart_under_load(own_broker: LocalBroker, tmp_path: Path) -> None:
    settings = Settings(
        kafka_bootstrap=own_broker.bootstrap,
        topic_prefix=f"r{uuid.uuid4().hex[:8]}.",
        request_partitions=2,
        results_partitions=2,
        api_keys=(SecretStr(API_KEY),),
        request_timeout_s=DEADLINE_S,
        liveness_refresh_s=0.5,
        cache_dir=cache_dir(),
        worker_metrics_port=0,
        drain_timeout_s=10,
    )
    job = new_job_id()
    tasks = bulk_tasks(LOCAL, BULK, max_tokens=8, job_id=job)
    env = process_env(settings)
    with process(["worker", "--model", LOCAL, "--model", "echo"], env, tmp_path / "worker.log"):
        async with front_end(settings) as client:
            await wait_live(client, LOCAL, "echo")
            await publish_tasks(settings, tasks)
            stop = asyncio.Event()
            callers = asyncio.create_task(_caller(client, stop))
            await asyncio.sleep(4)
            # In a thread: the front end shares this event loop and must answer meanwhile.
            await asyncio.to_thread(own_broker.stop)
            await asyncio.sleep(OUTAGE_S)
            restarted = time.monotonic()
            await asyncio.to_thread(own_broker.start)
            broker_start_s = time.monotonic() - restarted
            recovery_s = await _until_served(client, timeout_s=90)
            stop.set()
            answers = await callers
            counted = await await_results(settings, {t.request_id for t in tasks}, 180)
    late = [a for a in answers if a[1] > DEADLINE_S + DEADLINE_SLACK_S]
    statuses = collections.Counter(s for s, _ in answers)
    print(
        f"\nbulk {counted}; {len(answers)} sync callers: {dict(statuses)}, slowest "
        f"{max(t for _, t in answers):.1f} s (deadline {DEADLINE_S} s); broker down "
        f"{OUTAGE_S} s + {broker_start_s:.1f} s to start; served again {recovery_s:.1f} s later"
    )
    assert counted.missing == 0 and counted.duplicates == 0 and counted.errors == 0, counted
    assert not late, f"callers answered after their deadline: {late}"
    assert set(statuses) <= {200, 503, 504}, answers
