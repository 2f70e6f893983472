"""A worker SIGKILLed mid-batch and restarted: every request gets exactly one result."""

from __future__ import annotations

import asyncio
import collections
import signal

import httpx
import pytest

from schemas.settings import Settings
from tests.integration.harness import (
    LOCAL,
    committed_results,
    front_end,
    spec_body,
    wait_live,
    worker_process,
)

pytestmark = [pytest.mark.kafka, pytest.mark.model]
REQUESTS = 24


async def test_sigkill_mid_batch_loses_and_duplicates_nothing(settings: Settings) -> None:
    first = worker_process(settings, LOCAL)
    second = None
    try:
        async with front_end(settings) as client:
            await wait_live(client, LOCAL)
            body = spec_body(model=LOCAL, max_tokens=48, stop=None)
            calls = [
                asyncio.create_task(client.post("/v1/completion", json=body))
                for _ in range(REQUESTS)
            ]
            done, _ = await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED, timeout=120)
            assert done, "no request finished before the kill"
            finished_before_kill = sum(c.done() for c in calls)
            assert finished_before_kill < REQUESTS, "the kill came too late to be mid-work"
            first.send_signal(signal.SIGKILL)
            first.wait()
            second = worker_process(settings, LOCAL)
            responses: list[httpx.Response] = await asyncio.gather(*calls)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(30)
    assert [r.status_code for r in responses] == [200] * REQUESTS, [
        r.text for r in responses if r.status_code != 200
    ]
    ids = {r.json()["id"] for r in responses}
    results = await committed_results(settings)
    per_request = collections.Counter((r.request_id, r.choice_index) for r in results)
    assert set(rid for rid, _ in per_request) == ids
    duplicates = {k: n for k, n in per_request.items() if n != 1}
    assert not duplicates, f"results seen more than once by a read_committed reader: {duplicates}"
    print(f"\n{finished_before_kill}/{REQUESTS} answered before SIGKILL; {len(results)} results")
