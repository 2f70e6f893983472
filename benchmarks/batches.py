"""B3 for the OpenAI Batch API, on the ``echo`` model, through the official SDK.

``throughput``: one batch of N lines (100,000 by default) uploaded, created, polled to
``completed`` and downloaded; lines/s end to end, with each stage's time.

``cost``: ``GET /v1/batches/{id}`` p50 and the output download time of a 100-line batch on a
fresh prefix, then again after 1,000,000 other results were written straight to the results
topic (a fast producer, no worker: producing them through the pipeline would take most of an
hour on two busy cores) and 1,000 more finished batches of 100 lines' worth of state. The
ratio after/before is the figure: the design says it stays near 1 (the target is within 2x).
"""

from __future__ import annotations

import asyncio
import io
import json
import statistics
import time
from typing import Any

import openai
from aiokafka import AIOKafkaProducer

from benchmarks.stack import API_KEY, Stack, service
from benchmarks.stats import Run
from schemas.topics import Topics
from schemas.wire import ChoiceResult, ResultMessage, encode

ECHO = "echo"
_STATUS_CALLS = 200
_DOWNLOADS = 5


def _input(lines: int) -> bytes:
    rows = (
        {
            "custom_id": f"line-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": ECHO,
                "messages": [{"role": "user", "content": f"line {i}"}],
                "max_tokens": 8,
            },
        }
        for i in range(lines)
    )
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _client(stack: Stack) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{stack.port}/v1", api_key=API_KEY, max_retries=0, timeout=600
    )


async def _run_batch(sdk: openai.AsyncOpenAI, lines: int) -> tuple[str, str, dict[str, float]]:
    """Upload, create, poll to completed; the batch id, output id and each stage's seconds."""
    stages: dict[str, float] = {}
    began = time.perf_counter()
    upload = await sdk.files.create(file=("in.jsonl", io.BytesIO(_input(lines))), purpose="batch")
    stages["upload_s"] = time.perf_counter() - began
    batch = await sdk.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    stages["create_s"] = time.perf_counter() - began - stages["upload_s"]
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        await asyncio.sleep(0.2)
        batch = await sdk.batches.retrieve(batch.id)
    stages["until_completed_s"] = time.perf_counter() - began
    if batch.status != "completed" or not batch.output_file_id:
        raise RuntimeError(f"batch ended {batch.status}: {batch}")
    return batch.id, batch.output_file_id, stages


async def throughput(bootstrap: str, lines: int) -> list[Run]:
    """A batch of ``lines`` lines on echo, end to end."""
    env = {"KC_BATCH_MAX_LINES": str(max(lines, 50_000))}
    async with service(bootstrap, [ECHO], env) as stack:
        sdk = _client(stack)
        run = Run("B3", "ours (Batch API, echo)", f"{lines} lines")
        began = time.perf_counter()
        _, output_id, stages = await _run_batch(sdk, lines)
        downloaded = time.perf_counter()
        content = (await sdk.files.content(output_id)).content
        run.extra["download_s"] = round(time.perf_counter() - downloaded, 2)
        run.elapsed_s = time.perf_counter() - began
        answered = content.count(b"\n")
        run.latencies_s = [stages["until_completed_s"]] * answered
        run.extra |= {k: round(v, 2) for k, v in stages.items()}
        run.extra["lines_per_s"] = round(answered / stages["until_completed_s"], 1)
        run.extra.update(stack.rss_mb())
        await sdk.close()
    return [run]


async def _measure(sdk: openai.AsyncOpenAI, batch_id: str, output_id: str) -> dict[str, float]:
    calls = []
    for _ in range(_STATUS_CALLS):
        t = time.perf_counter()
        await sdk.batches.retrieve(batch_id)
        calls.append(time.perf_counter() - t)
    downloads = []
    for _ in range(_DOWNLOADS):
        t = time.perf_counter()
        content = (await sdk.files.content(output_id)).content
        downloads.append(time.perf_counter() - t)
        assert content.count(b"\n") == 100
    return {
        "status_p50_ms": statistics.median(calls) * 1000,
        "download_ms": statistics.median(downloads) * 1000,
    }


async def _flood(stack: Stack, count: int) -> float:
    """Write ``count`` results of other requests to the results topic; seconds taken."""
    topic = Topics(stack.prefix).results
    producer = AIOKafkaProducer(
        bootstrap_servers=stack.bootstrap,
        acks=1,
        linger_ms=50,
        max_batch_size=1024 * 1024,
        compression_type="gzip",
    )
    choice = ChoiceResult(
        text="other " * 8,
        finish_reason="length",
        prompt_tokens=3,
        completion_tokens=8,
        prediction_time_ms=1,
        created=int(time.time()),
    )
    began = time.perf_counter()
    await producer.start()
    try:
        pending: list[Any] = []
        for i in range(count):
            result = ResultMessage(
                request_id=f"other-{i}",
                choice_index=0,
                model=ECHO,
                worker_id="flood",
                choice=choice,
                job_id=f"job-{i % 1000}",
                custom_id=f"c{i}",
            )
            pending.append(await producer.send(topic, encode(result), result.request_id.encode()))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - began


async def cost(bootstrap: str, others: int) -> list[Run]:
    """Status p50 and download time of a 100-line batch, before and after ``others`` results."""
    runs = []
    async with service(bootstrap, [ECHO]) as stack:
        sdk = _client(stack)
        batch_id, output_id, _ = await _run_batch(sdk, 100)
        fresh = await _measure(sdk, batch_id, output_id)
        flood_s = await _flood(stack, others)
        after_old = await _measure(sdk, batch_id, output_id)
        new_batch, new_output, _ = await _run_batch(sdk, 100)
        after_new = await _measure(sdk, new_batch, new_output)
        await sdk.close()
    for label, figures in (
        ("fresh broker", fresh),
        (f"after {others:,} other results (same batch)", after_old),
        (f"after {others:,} other results (new batch)", after_new),
    ):
        run = Run("B3", "ours (Batch API cost)", label)
        run.extra = {k: round(v, 2) for k, v in figures.items()}
        runs.append(run)
    for run in runs[1:]:
        for key in ("status_p50_ms", "download_ms"):
            run.extra[f"{key}_vs_fresh"] = round(run.extra[key] / fresh[key], 2)
    runs[1].extra["flood_s"] = round(flood_s, 1)
    return runs


async def _main(lines: int, others: int) -> None:
    from benchmarks.stack import broker

    with broker() as bootstrap:
        runs = await throughput(bootstrap, lines) if lines else []
        runs += await cost(bootstrap, others) if others else []
    for run in runs:
        print(run.load, json.dumps(run.extra))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.batches", description=__doc__)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--others", type=int, default=1_000_000)
    args = parser.parse_args()
    asyncio.run(_main(args.lines, args.others))
