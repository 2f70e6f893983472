"""Running the real front end and workers inside a test, against the test's broker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn
from aiokafka import AIOKafkaConsumer

from producer.app import create_app
from schemas.registry import load_registry
from schemas.settings import Settings
from schemas.topics import Topics
from schemas.wire import ResultMessage, decode_result
from tests.conftest import API_KEY
from worker.service import serve_models

LOCAL = "smollm2-135m-instruct"


def free_port() -> int:
    """A port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def front_end(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A real uvicorn front end on a free port; yields a client carrying the test key."""
    app = create_app(settings, load_registry())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=120
    ) as client:
        try:
            yield client
        finally:
            server.should_exit = True
            await task


@contextlib.asynccontextmanager
async def worker(settings: Settings, *models: str) -> AsyncIterator[None]:
    """An in-process worker serving ``models`` until the block ends (graceful stop)."""
    stopping = asyncio.Event()
    task = asyncio.create_task(serve_models(list(models), settings, load_registry(), stopping))
    try:
        yield
    finally:
        stopping.set()
        await task


async def wait_live(client: httpx.AsyncClient, *models: str, timeout_s: float = 120) -> None:
    """Wait until the front end sees a live worker for every model."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = await client.get("/v1/models")
        assert response.status_code == 200, response.text
        listed = response.json()["data"]
        live = {m["id"] for m in listed if m["live_workers"] > 0}
        if set(models) <= live:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"no live worker for {models} after {timeout_s} s")


def worker_process(
    settings: Settings, *models: str, env: dict[str, str] | None = None, stderr: Any = None
) -> subprocess.Popen[bytes]:
    """A worker in its own process (to be killed), configured like ``settings``."""
    base = {
        **os.environ,
        "KC_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "KC_TOPIC_PREFIX": settings.topic_prefix,
        "KC_REQUEST_PARTITIONS": str(settings.request_partitions),
        "KC_RESULTS_PARTITIONS": str(settings.results_partitions),
        "KC_CACHE_DIR": str(settings.cache_dir),
        "KC_WORKER_METRICS_PORT": "0",
    }
    args = [a for m in models for a in ("--model", m)]
    command = [sys.executable, "-m", "producer.cli", "worker", *args]
    return subprocess.Popen(command, env=base | (env or {}), stderr=stderr)


async def committed_results(settings: Settings, idle_s: float = 3.0) -> list[ResultMessage]:
    """Every result a read_committed reader sees on the results topic, from the beginning."""
    consumer = AIOKafkaConsumer(
        Topics(settings.topic_prefix).results,
        bootstrap_servers=settings.kafka_bootstrap,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    results: list[ResultMessage] = []
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=int(idle_s * 1000))
            if not batch:
                return results
            results += [decode_result(r.value) for rs in batch.values() for r in rs]
    finally:
        await consumer.stop()


def spec_body(**overrides: Any) -> dict[str, Any]:
    """The API-SPEC example body, on the local model unless overridden."""
    body: dict[str, Any] = {
        "prompt": "Once upon a time",
        "model": [LOCAL, LOCAL],
        "max_tokens": 50,
        "temperature": 0.7,
        "top_p": 0.8,
        "stop": ["."],
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
    }
    body.update(overrides)
    return body
