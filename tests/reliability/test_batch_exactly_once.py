"""A batch survives a worker SIGKILL, a front-end restart and a broker restart mid-batch:
each ends with exactly one output line per custom_id and request counts that match the file.

The batch runs on the local model (slow enough to be mid-batch when the fault comes).
"""

from __future__ import annotations

import asyncio
import io
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import openai
import pytest
from devstack.broker import LocalBroker
from openai.types import Batch
from pydantic import SecretStr

from producer.jobs.batch.output import batch_results
from schemas.settings import Settings
from tests.conftest import API_KEY, cache_dir
from tests.integration.harness import LOCAL, front_end, process_env, wait_live, worker_process
from tests.integration.test_batches import chat_line, jsonl, lines_of, until_counted, until_done
from tests.reliability.support import process, wait_ready

pytestmark = [pytest.mark.kafka, pytest.mark.model, pytest.mark.slow, pytest.mark.timeout(600)]
LINES = 80


def sdk_of(client: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{client.base_url}/v1", api_key=API_KEY, max_retries=0)


async def start(sdk: openai.AsyncOpenAI) -> Batch:
    lines = [chat_line(i, LOCAL, max_tokens=8, temperature=0) for i in range(LINES)]
    upload = await sdk.files.create(file=("in.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    return await sdk.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )


async def check_exactly_once(settings: Settings, sdk: openai.AsyncOpenAI, batch_id: str) -> str:
    """The batch's end: one output line per custom_id, counts as in the file, no duplicate."""
    done = await until_done(sdk, batch_id, timeout_s=400)
    assert done.status == "completed" and done.output_file_id, done
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (LINES, LINES)
    assert done.request_counts.failed == 0
    output = await lines_of(sdk, done.output_file_id)
    assert sorted(o["custom_id"] for o in output) == sorted(f"req-{i}" for i in range(LINES))
    committed = Counter(
        [(r.custom_id, r.choice_index) async for r, _ in batch_results(settings, batch_id)]
    )
    duplicates = sum(n - 1 for n in committed.values())
    assert len(committed) == LINES and duplicates == 0, committed.most_common(3)
    return (
        f"{len(output)} output lines, {len(committed)} committed results, {duplicates} duplicates"
    )


async def test_a_worker_sigkilled_mid_batch(settings: Settings) -> None:
    first = worker_process(settings, LOCAL)
    try:
        async with front_end(settings) as client:
            await wait_live(client, LOCAL, timeout_s=180)
            sdk = sdk_of(client)
            batch = await start(sdk)
            done = await until_counted(sdk, batch.id, 10)
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            assert done.request_counts is not None and done.request_counts.completed < LINES
            second = worker_process(settings, LOCAL)
            try:
                figures = await check_exactly_once(settings, sdk, batch.id)
            finally:
                second.terminate()
                second.wait(30)
            await sdk.close()
    finally:
        if first.poll() is None:
            first.kill()
    print(f"\nworker SIGKILL at {done.request_counts.completed}/{LINES}: {figures}")


async def test_the_front_end_restarted_mid_batch(settings: Settings, tmp_path: Path) -> None:
    with process(["worker", "--model", LOCAL], process_env(settings), tmp_path / "w.log"):
        async with front_end(settings) as client:
            await wait_live(client, LOCAL, timeout_s=180)
            sdk = sdk_of(client)
            batch = await start(sdk)
            at = await until_counted(sdk, batch.id, 10)
            await sdk.close()
        async with front_end(settings) as client:
            await wait_ready(str(client.base_url))
            sdk = sdk_of(client)
            # The new instance, once ready, rebuilt the batch and its counts from the topics
            # (the lines in flight at the restart may have finished it meanwhile).
            again = await sdk.batches.retrieve(batch.id)
            assert again.status in ("in_progress", "completed"), again
            assert again.request_counts is not None
            assert again.request_counts.completed >= 10
            figures = await check_exactly_once(settings, sdk, batch.id)
            await sdk.close()
    assert at.request_counts is not None and at.request_counts.completed < LINES
    print(f"\nfront end restarted at {at.request_counts.completed}/{LINES}: {figures}")


async def test_the_broker_restarted_mid_batch(own_broker: LocalBroker, tmp_path: Path) -> None:
    settings = Settings(
        kafka_bootstrap=own_broker.bootstrap,
        topic_prefix=f"r{uuid.uuid4().hex[:8]}.",
        request_partitions=2,
        results_partitions=2,
        api_keys=(SecretStr(API_KEY),),
        liveness_refresh_s=0.5,
        cache_dir=cache_dir(),
        worker_metrics_port=0,
        drain_timeout_s=10,
    )
    with process(["worker", "--model", LOCAL], process_env(settings), tmp_path / "w.log"):
        async with front_end(settings) as client:
            await wait_live(client, LOCAL, timeout_s=180)
            sdk = sdk_of(client)
            batch = await start(sdk)
            at = await until_counted(sdk, batch.id, 10)
            # In a thread: the front end shares this event loop.
            await asyncio.to_thread(own_broker.stop)
            await asyncio.sleep(8)
            began = time.monotonic()
            await asyncio.to_thread(own_broker.start)
            figures = await check_exactly_once(settings, sdk, batch.id)
            took = time.monotonic() - began
            await sdk.close()
    assert at.request_counts is not None
    print(
        f"\nbroker restarted at {at.request_counts.completed}/{LINES}: {figures}; "
        f"completed {took:.0f} s after the restart"
    )
