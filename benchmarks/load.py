"""Load shapes: closed loop (N clients, each sends when its last answer came) and open loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from benchmarks.stats import Run

# One request: returns its completion tokens, or raises / returns None on error.
Send = Callable[[int], Awaitable[int | None]]


async def closed_loop(run: Run, send: Send, requests: int, concurrency: int) -> Run:
    """``concurrency`` clients share ``requests`` requests, each one at a time."""
    counter = iter(range(requests))

    async def client() -> None:
        for i in counter:
            started = time.perf_counter()
            try:
                tokens = await send(i)
            except Exception:  # a failed request is counted, not fatal to the benchmark
                tokens = None
            if tokens is None:
                run.errors += 1
            else:
                run.ok(time.perf_counter() - started, tokens)

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    run.elapsed_s = time.perf_counter() - began
    return run


async def open_loop(run: Run, send: Send, rate: float, duration_s: float) -> Run:
    """Requests started at ``rate`` per second whatever the answers; latency from schedule."""
    began = time.perf_counter()
    total = int(rate * duration_s)
    tasks: list[asyncio.Task[None]] = []

    async def one(i: int, due: float) -> None:
        try:
            tokens = await send(i)
        except Exception:  # counted as an error; the run goes on
            tokens = None
        if tokens is None:
            run.errors += 1
        else:
            run.ok(time.perf_counter() - due, tokens)

    for i in range(total):
        due = began + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    run.elapsed_s = time.perf_counter() - began
    return run
