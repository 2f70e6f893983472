"""The usage ledger under failure: a worker SIGKILLed under load and the front end that writes
the ledger SIGKILLed and restarted, while two front ends take requests. Afterwards the ledger's
totals equal exactly the sums of the committed results: nothing lost, nothing counted twice."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from devstack.process import free_port
from devstack.process import stop as stop_process

from schemas.settings import Settings
from tests.integration.harness import process_env, spec_body
from tests.integration.ledger import committed, ledger, results_topics, summed_results, totals
from tests.reliability.support import AUTH, process, wait_ready

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]
CALLERS = 16
_WRITES = "kc_usage_tokens_total{"  # only the front end that writes the ledger shows it


async def writer_of(urls: list[str], timeout_s: float = 60) -> int:
    """The index of the front end that writes the ledger (once it has counted something)."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() < deadline:
            for i, url in enumerate(urls):
                try:
                    if _WRITES in (await client.get(f"{url}/metrics")).text:
                        return i
                except httpx.TransportError:
                    continue
            await asyncio.sleep(0.2)
    raise TimeoutError("no front end writes the ledger")


async def load(urls: list[str], stop: asyncio.Event, answered: list[int]) -> None:
    """Callers posting completions to the front ends in turn until ``stop``; a front end that
    is down meanwhile is skipped."""

    async def caller(n: int) -> None:
        async with httpx.AsyncClient(headers=AUTH, timeout=60) as client:
            i = n
            while not stop.is_set():
                i += 1
                try:
                    response = await client.post(
                        f"{urls[i % len(urls)]}/v1/completion",
                        json=spec_body(model="echo", max_tokens=3 + i % 5, stop=None),
                    )
                    answered.append(response.status_code)
                except httpx.TransportError:
                    await asyncio.sleep(0.1)

    await asyncio.gather(*(caller(n) for n in range(CALLERS)))


async def more(answered: list[int], count: int, timeout_s: float = 120) -> None:
    """Wait until ``count`` more requests are answered."""
    deadline = time.monotonic() + timeout_s
    wanted = len(answered) + count
    while True:
        if len(answered) >= wanted:
            return
        assert time.monotonic() < deadline, f"{len(answered)} answers, waiting for {wanted}"
        await asyncio.sleep(0.05)


async def test_the_ledger_survives_a_killed_worker_and_a_killed_writer(
    settings: Settings, tmp_path: Path
) -> None:
    ports = [free_port(), free_port()]
    envs = [
        process_env(settings, KC_PORT=str(port), KC_REPLY_PARTITION=str(i))
        for i, port in enumerate(ports)
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    worker_env = process_env(settings)
    answered: list[int] = []
    stop = asyncio.Event()
    with (
        process(["serve"], envs[0], tmp_path / "a.log") as a,
        process(["serve"], envs[1], tmp_path / "b.log") as b,
        process(["worker", "--model", "echo"], worker_env, tmp_path / "w1.log") as first,
    ):
        for url in urls:
            await wait_ready(url)
        callers = asyncio.create_task(load(urls, stop, answered))
        await more(answered, 150)
        first.send_signal(signal.SIGKILL)  # tasks in flight: their transactions abort
        await asyncio.to_thread(first.wait)
        with process(["worker", "--model", "echo"], worker_env, tmp_path / "w2.log"):
            writer = await writer_of(urls)
            await more(answered, 150)
            os.kill((a, b)[writer].pid, signal.SIGKILL)
            with process(["serve"], envs[writer], tmp_path / "again.log"):
                await wait_ready(urls[writer])
                await more(answered, 150)
                stop.set()
                await callers
                counted = await ledger(settings, results_topics(settings), timeout_s=90)
    stop_process(first)
    results = await committed(settings, results_topics(settings))
    print(f"\n{len(answered)} answers, {len(results)} committed results; ledger {totals(counted)}")
    assert answered.count(200) >= 450
    assert totals(counted) == summed_results(results)
    assert totals(counted)["requests"] == len({(r.request_id, r.choice_index) for r in results})
