"""A second worker joins a model's group under load (a rebalance), then the first leaves on
SIGTERM (a graceful drain): every request answered, every result seen exactly once."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest

from schemas.settings import Settings
from tests.integration.harness import LOCAL, committed_results, front_end, process_env, spec_body
from tests.reliability.support import concurrent_calls, process, tally

pytestmark = [pytest.mark.kafka, pytest.mark.model, pytest.mark.slow, pytest.mark.timeout(600)]
REQUESTS = 200
# Enough work that the load outlasts the second worker's start (a model load) and the
# first one's drain; 16-row batches keep it from finishing first on a fast machine.
NEW_TOKENS = 24
BATCH = "16"


async def _live_workers(client: httpx.AsyncClient) -> int:
    models = (await client.get("/v1/models")).json()["data"]
    return sum(m["live_workers"] for m in models if m["id"] == LOCAL)


async def _until_workers(client: httpx.AsyncClient, count: int, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while await _live_workers(client) != count:
        assert time.monotonic() < deadline, f"never {count} live workers"
        await asyncio.sleep(0.3)


def _done(calls: list[asyncio.Task[httpx.Response]]) -> int:
    return sum(c.done() for c in calls)


async def test_join_and_graceful_leave_under_load(settings: Settings, tmp_path: Path) -> None:
    patient = settings.model_copy(update={"request_timeout_s": 400, "drain_timeout_s": 20})
    env = process_env(patient, KC_WORKER_MAX_BATCH=BATCH)
    body = spec_body(model=LOCAL, max_tokens=NEW_TOKENS, stop=None)
    marks: dict[str, int] = {}
    with process(["worker", "--model", LOCAL], env, tmp_path / "a.log") as first:
        async with front_end(patient) as client:
            await _until_workers(client, 1)
            async with concurrent_calls(client, body, REQUESTS) as calls:
                marks["before join"] = _done(calls)
                with process(["worker", "--model", LOCAL], env, tmp_path / "b.log"):
                    await _until_workers(client, 2)
                    marks["at join"] = _done(calls)
                    first.send_signal(signal.SIGTERM)
                    code = await asyncio.to_thread(first.wait, 60)
                    marks["at leave"] = _done(calls)
                    responses = await asyncio.gather(*calls)
    assert code == 0, "the first worker did not exit cleanly on SIGTERM"
    assert marks["at leave"] < REQUESTS, f"the load was over before the worker left: {marks}"
    assert [r.status_code for r in responses] == [200] * REQUESTS, [
        r.text for r in responses if r.status_code != 200
    ][:3]
    ids = {r.json()["id"] for r in responses}
    counted = tally(await committed_results(patient), ids)
    workers = {r.worker_id for r in await committed_results(patient, idle_s=1)}
    print(f"\nanswered {marks} of {REQUESTS}; {counted}; results from workers {sorted(workers)}")
    assert counted.missing == 0 and counted.duplicates == 0 and counted.received == REQUESTS
    assert len(workers) == 2, "both workers served part of the load"
