"""What the reliability tests share: processes configured like a test's settings, bulk tasks
published straight to the bulk lane, and exactly-once counting on the results topic."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from devstack import process as child

from producer.publisher import Publisher
from schemas.settings import Settings
from schemas.wire import ResultMessage, Sampling, TaskMessage
from tests.conftest import API_KEY
from tests.integration.harness import CLI, committed_results

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


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[child.Child]:
    """``python -m producer.cli ARGS`` with its output in ``log``; terminated at the end."""
    proc = child.launch([*CLI, *args], env=env, log=log)
    try:
        yield proc
    finally:
        child.stop(proc)


async def wait_ready(base_url: str, timeout_s: float = 60) -> None:
    """Wait until an out-of-process front end answers /readyz with 200."""
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:

        async def ready() -> bool:
            with contextlib.suppress(httpx.TransportError):
                return (await client.get("/readyz")).status_code == 200
            return False

        await child.await_ready(ready, [], f"the front end at {base_url}", timeout_s)


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
