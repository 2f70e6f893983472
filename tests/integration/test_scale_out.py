"""Two workers of one model and two front ends on one broker: load spreads, replies go home."""

from __future__ import annotations

import asyncio
import collections
import time

import httpx
import pytest

from schemas.settings import Settings
from tests.integration.harness import (
    committed_results,
    front_end,
    spec_body,
    wait_live,
    worker_process,
)

pytestmark = [pytest.mark.kafka]
PER_FRONT_END = 100


async def test_two_workers_two_front_ends(settings: Settings) -> None:
    wide = settings.model_copy(update={"request_partitions": 4, "results_partitions": 2})
    workers = [worker_process(wide, "echo"), worker_process(wide, "echo")]
    fronts = [wide.model_copy(update={"reply_partition": p}) for p in (0, 1)]
    try:
        async with front_end(fronts[0]) as a, front_end(fronts[1]) as b:
            await wait_live(a, "echo")
            await wait_live(b, "echo")
            await _wait_members(a, 2)
            await _until_both_serve(a, wide)
            calls = [
                client.post("/v1/completion", json=spec_body(model="echo", prompt=f"{name} {i}"))
                for name, client in (("a", a), ("b", b))
                for i in range(PER_FRONT_END)
            ]
            responses = await asyncio.gather(*calls)
            unmatched = [await _unmatched(client) for client in (a, b)]
    finally:
        for proc in workers:
            proc.terminate()
            proc.wait(30)
    assert [r.status_code for r in responses] == [200] * (2 * PER_FRONT_END)
    # Each caller got the answer to its own prompt, from the front end it called.
    for index, response in enumerate(responses):
        name, i = ("a", index) if index < PER_FRONT_END else ("b", index - PER_FRONT_END)
        assert response.json()["choices"][0]["text"].startswith(f"{name} {i}")
    assert unmatched == [0.0, 0.0], "a result reached a front end that did not hold its caller"
    burst = {r.json()["id"] for r in responses}
    results = await committed_results(wide)
    by_worker = collections.Counter(r.worker_id for r in results if r.request_id in burst)
    assert len(by_worker) == 2, f"the load did not spread: {by_worker}"
    assert min(by_worker.values()) >= PER_FRONT_END // 4, by_worker
    print(f"\nresults per worker: {dict(by_worker)}")


async def _until_both_serve(client: httpx.AsyncClient, settings: Settings) -> None:
    """Probe until both workers have answered: the group's rebalance has then settled."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        probes = [client.post("/v1/completion", json=spec_body(model="echo")) for _ in range(8)]
        await asyncio.gather(*probes)
        results = await committed_results(settings, idle_s=0.5)
        if len({r.worker_id for r in results}) == 2:
            return
    raise TimeoutError("the second worker never got partitions")


async def _wait_members(client: httpx.AsyncClient, count: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        models = (await client.get("/v1/models")).json()["data"]
        if next(m for m in models if m["id"] == "echo")["live_workers"] >= count:
            await asyncio.sleep(1.0)  # let the group finish its rebalance
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"fewer than {count} echo workers after {timeout_s} s")


async def _unmatched(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    line = next(x for x in text.splitlines() if x.startswith("kc_results_unmatched_total "))
    return float(line.split()[1])
