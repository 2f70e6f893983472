"""B2 and B3: the pipeline's own cost, on the ``echo`` model (no inference at all).

B2: added latency at a fixed low rate; the highest open-loop rate sustained with no error and
a bounded p99; the front end's RSS with 2,000 requests in flight (the worker is paused with
SIGSTOP so they pile up, then resumed). B3: a 10,000-line bulk job submitted with
``producer.jobs.submit`` (a batch) and written out with ``producer.jobs.collect``; a line's
latency runs from the submit call to its result's record time.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import tempfile
import time
from pathlib import Path

from benchmarks.http import Pool
from benchmarks.load import open_loop
from benchmarks.stack import HEADERS, Stack, service
from benchmarks.stats import Run
from schemas.settings import Settings

ECHO = "echo"
_BODY = {"model": ECHO, "prompt": "the quick brown fox jumps", "max_tokens": 16}
SUSTAINED_P99_S = 1.0  # beyond this the queue grows: the rate is not sustained


async def at_rate(
    stack: Stack, rate: float, duration_s: float, label: str, name: str = "B2"
) -> Run:
    """``rate`` completions a second on echo for ``duration_s`` (after 20 to warm up)."""
    pool = Pool("127.0.0.1", stack.port, 512)
    run = Run(name, "ours (echo)", label)

    async def send(_: int) -> int | None:
        status, raw = await pool.post("/v1/completion", _BODY, HEADERS)
        if status == 200:
            return int(json.loads(raw)["usage"]["completion_tokens"])
        key = f"status_{status}"
        run.extra[key] = run.extra.get(key, 0) + 1
        return None

    try:
        for _ in range(20):
            await send(0)  # warm-up: connections, producer metadata, the first fetches
        await open_loop(run, send, rate, duration_s)
    finally:
        await pool.close()
    run.extra.update(stack.rss_mb())
    run.extra["target_rps"] = rate
    return run


def sustained(run: Run) -> bool:
    """No error, every request answered, and a p99 that shows no growing queue."""
    return run.errors == 0 and run.summary()["p99_ms"] <= SUSTAINED_P99_S * 1000


async def _in_flight(stack: Stack, count: int) -> Run:
    """Front-end RSS with ``count`` requests waiting (the worker stopped), then answered."""
    pool = Pool("127.0.0.1", stack.port, count)
    run = Run("B2", "ours (echo)", f"{count} in flight")
    os.kill(stack.worker_pid, signal.SIGSTOP)
    began = time.perf_counter()

    async def one() -> None:
        started = time.perf_counter()
        status, _ = await pool.post("/v1/completion", _BODY, HEADERS)
        if status == 200:
            run.ok(time.perf_counter() - started)
        else:
            run.errors += 1

    tasks = [asyncio.create_task(one()) for _ in range(count)]
    await asyncio.sleep(3.0)  # every request accepted and waiting in the front end
    run.extra["front_end_rss_mb_in_flight"] = stack.rss_mb()["front_end_rss_mb"]
    os.kill(stack.worker_pid, signal.SIGCONT)
    await asyncio.gather(*tasks)
    run.elapsed_s = time.perf_counter() - began
    await pool.close()
    return run


async def b2(bootstrap: str, low_rate: float, rates: list[float], duration_s: float) -> list[Run]:
    """Added latency at ``low_rate``, then rising rates until one is not sustained."""
    async with service(bootstrap, [ECHO]) as stack:
        runs = [await at_rate(stack, low_rate, min(duration_s, 10.0), f"{low_rate:g} req/s")]
        for rate in rates:
            run = await at_rate(stack, rate, duration_s, f"{rate:g} req/s for {duration_s:g} s")
            run.extra["sustained"] = sustained(run)
            runs.append(run)
            if not sustained(run):
                break
        runs.append(await _in_flight(stack, 2000))
    return runs


def _job_file(lines: int, folder: Path) -> Path:
    path = folder / "job.jsonl"
    rows = (
        json.dumps(
            {"custom_id": f"line-{i}", "model": ECHO, "prompt": f"line {i}", "max_tokens": 8}
        )
        for i in range(lines)
    )
    path.write_text("\n".join(rows) + "\n")
    return path


async def b3(bootstrap: str, lines: int) -> list[Run]:
    """A bulk job of ``lines`` lines on echo: lines/s from submit to the last result."""
    from producer.jobs import collect, submit
    from producer.jobs.batch.output import batch_results

    async with service(bootstrap, [ECHO]) as stack:
        settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=stack.prefix)
        run = Run("B3", "ours (echo, bulk)", f"{lines} lines")
        with tempfile.TemporaryDirectory() as tmp:
            source = _job_file(lines, Path(tmp))
            began, began_ms = time.perf_counter(), time.time() * 1000
            report = await submit(settings, source, job_id="bench-b3")
            run.extra["submit_s"] = round(time.perf_counter() - began, 2)
            await collect(settings, "bench-b3", Path(tmp) / "out.jsonl", progress=False)
            run.elapsed_s = time.perf_counter() - began
        assert report.batch is not None
        # Each line's latency: from the submit call to its result's record time.
        async for result, at_ms in batch_results(settings, report.batch.id):
            if result.error is None:
                run.ok((at_ms - began_ms) / 1000)
            else:
                run.errors += 1
        run.extra["lines_per_s"] = round((len(run.latencies_s) + run.errors) / run.elapsed_s, 1)
        run.extra.update(stack.rss_mb())
    return [run]
