"""What the reliability tests share: processes configured like a test's settings, bulk tasks
published straight to the bulk lane, and exactly-once counting on the results topic."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from producer.publisher import Publisher
from schemas.settings import Settings
from schemas.wire import ResultMessage, Sampling, TaskMessage
from tests.conftest import API_KEY
from tests.integration.harness import committed_results

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@contextlib.asynccontextmanager
async def concurrent_calls(
    client: httpx.AsyncClient, body: dict[str, Any], count: int
) -> AsyncIterator[list[asyncio.Task[httpx.Response]]]:
    """``count`` completions posted at once, each on a connection of its own, to the front end
    ``client`` talks to; yields their tasks once the first is answered."""
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=count + 10)
    async with httpx.AsyncClient(
        base_url=client.base_url, headers=client.headers, timeout=420, limits=limits
    ) as wide:
        calls = [asyncio.create_task(wide.post("/v1/completion", json=body)) for _ in range(count)]
        await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED, timeout=300)
        yield calls


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a front-end or worker process configured like ``settings``."""
    env = {
        **os.environ,
        "KC_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "KC_TOPIC_PREFIX": settings.topic_prefix,
        "KC_REQUEST_PARTITIONS": str(settings.request_partitions),
        "KC_RESULTS_PARTITIONS": str(settings.results_partitions),
        "KC_CACHE_DIR": str(settings.cache_dir),
        "KC_API_KEYS": ",".join(k.get_secret_value() for k in settings.api_keys),
        "KC_REQUEST_TIMEOUT_S": str(settings.request_timeout_s),
        "KC_LIVENESS_REFRESH_S": str(settings.liveness_refresh_s),
        "KC_MAX_IN_FLIGHT": str(settings.max_in_flight),
        "KC_DRAIN_TIMEOUT_S": str(settings.drain_timeout_s),
        "KC_WORKER_METRICS_PORT": "0",
    }
    env.update(extra)
    return env


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m producer.cli ARGS`` with its output in ``log``; terminated at the end."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "producer.cli", *args], env=env, stdout=out, stderr=out
        )
    try:
        yield proc
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes], sig_timeout_s: float = 30) -> None:
    """SIGTERM, then SIGKILL after a bound; no-op when it has already exited."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(sig_timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_ready(base_url: str, timeout_s: float = 60) -> None:
    """Wait until an out-of-process front end answers /readyz with 200."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.3)
    raise TimeoutError(f"front end at {base_url} not ready after {timeout_s} s")


def bulk_tasks(model: str, count: int, max_tokens: int, job_id: str) -> list[TaskMessage]:
    """``count`` bulk-lane tasks of one job (what ``submit`` publishes), greedy and short."""
    sampling = Sampling(max_tokens=max_tokens, temperature=0.0, top_p=1.0)
    now = time.time()
    return [
        TaskMessage(
            request_id=f"{job_id}-{i}",
            choice_index=0,
            model=model,
            prompt=f"Write about the number {i}",
            sampling=sampling,
            enqueued_at=now,
            lane="bulk",
            job_id=job_id,
            custom_id=str(i),
        )
        for i in range(count)
    ]


async def publish_tasks(settings: Settings, tasks: list[TaskMessage]) -> None:
    """Publish tasks to their lanes with the service's own publisher."""
    publisher = Publisher(settings, "kc-test-bulk", linger_ms=5)
    await publisher.start()
    try:
        await publisher.publish(tasks)
    finally:
        await publisher.stop()


def new_job_id() -> str:
    """A job id of this test's own."""
    return f"job-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Tally:
    """Results of some requests as a read_committed reader sees them."""

    expected: int
    received: int
    missing: int
    duplicates: int
    errors: int


def tally(results: Iterable[ResultMessage], request_ids: set[str]) -> Tally:
    """Count the results of ``request_ids``: missing, duplicated, failed."""
    mine = [r for r in results if r.request_id in request_ids]
    seen = collections.Counter((r.request_id, r.choice_index) for r in mine)
    return Tally(
        expected=len(request_ids),
        received=len(mine),
        missing=len(request_ids - {rid for rid, _ in seen}),
        duplicates=sum(n - 1 for n in seen.values()),
        errors=sum(1 for r in mine if r.error is not None),
    )


async def await_results(
    settings: Settings, request_ids: set[str], timeout_s: float, idle_s: float = 2.0
) -> Tally:
    """Re-read the results topic until every request has a result, or the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        counted = tally(await committed_results(settings, idle_s), request_ids)
        if counted.missing == 0 or time.monotonic() >= deadline:
            return counted
        await asyncio.sleep(2)
