"""Running the real front end and workers inside a test, against the test's broker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry

from producer.frontend.app import create_app
from schemas.kafka import ensure_topics
from schemas.metrics import WorkerMetrics
from schemas.registry import ModelSpec, Registry, load_registry
from schemas.settings import Settings
from schemas.topics import Topics
from schemas.wire import ResultMessage, decode_result
from tests.conftest import API_KEY, SPEC_EXAMPLE
from worker.backend import Backend
from worker.loop import ModelWorker
from worker.service import serve_models

LOCAL = "smollm2-135m-instruct"


def free_port() -> int:
    """A port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def front_end(
    settings: Settings, registry: Registry | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """A real uvicorn front end on a free port; yields a client carrying the test key."""
    app = create_app(settings, registry or load_registry())
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
    """The API example body (docs/API.md), on the local model unless overridden."""
    return {**SPEC_EXAMPLE, "model": [LOCAL, LOCAL], **overrides}


@contextlib.asynccontextmanager
async def backend_worker(
    settings: Settings, spec: ModelSpec, backend: Backend
) -> AsyncIterator[None]:
    """An in-process worker loop for one model around a backend the test holds (and closes)."""
    await ensure_topics(settings, [spec.name])
    metrics = WorkerMetrics.create(CollectorRegistry())
    stopping = asyncio.Event()
    loop = ModelWorker(spec, backend, settings, metrics, f"test-{spec.name}")
    task = asyncio.create_task(loop.run(stopping))
    try:
        yield
    finally:
        stopping.set()
        await task


@contextlib.contextmanager
def transformers_serve(
    checkpoint: Path,
    names: Iterable[str],
    workdir: Path,
    timeout_s: float = 120,
    *,
    pinned: bool = False,
) -> Iterator[str]:
    """``transformers serve`` on a free 127.0.0.1 port; yields its OpenAI base URL (``/v1``).

    Unpinned, it loads a requested model id on first use with ``from_pretrained(id)``, which
    takes a local directory of that name first: each of ``names`` is made a link to the
    checkpoint in ``workdir`` (its working directory), so vendor model ids such as ``gpt-4``
    are served by the checkpoint, offline. ``pinned`` starts it the plain way instead,
    ``transformers serve CHECKPOINT``: then it serves that one model and refuses other names.
    """
    for name in names:
        (workdir / name).symlink_to(checkpoint, target_is_directory=True)
    command = shutil.which("transformers", path=str(Path(sys.executable).parent))
    assert command, "the transformers console script is missing from the venv"
    port = free_port()
    log = (workdir / "serve.log").open("wb")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    args = [command, "serve", "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    if pinned:
        args.insert(2, str(checkpoint))
    process = subprocess.Popen(args, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/health", process, timeout_s)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"transformers serve exited with {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise TimeoutError(f"transformers serve not healthy at {url} after {timeout_s} s")
