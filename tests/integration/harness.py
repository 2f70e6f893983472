"""Running the real front end and workers inside a test, against the test's broker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from devstack import process
from prometheus_client import CollectorRegistry

from producer.frontend.app import create_app
from producer.jobs.batch.dispatch import Dispatcher
from producer.jobs.batch.session import opened
from schemas import clients
from schemas.kafka import Record, ensure_topics
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
CLI = [sys.executable, "-m", "producer.cli"]


@contextlib.asynccontextmanager
async def front_end(
    settings: Settings, registry: Registry | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """A real uvicorn front end on a free port; yields a client carrying the test key."""
    app = create_app(settings, registry or load_registry())
    port = process.free_port()
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
async def dispatching(settings: Settings) -> AsyncIterator[Dispatcher]:
    """A front end's batch dispatcher without the rest of the front end (job CLI tests)."""
    async with opened(settings) as service:
        dispatcher = Dispatcher(settings, service.registry, service.book)
        await dispatcher.start()
        try:
            yield dispatcher
        finally:
            await dispatcher.stop()


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


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a front-end or worker process configured like ``settings``."""
    env = {
        **os.environ,
        "KC_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "KC_TOPIC_PREFIX": settings.topic_prefix,
        "KC_REQUEST_PARTITIONS": str(settings.request_partitions),
        "KC_RESULTS_PARTITIONS": str(settings.results_partitions),
        "KC_CACHE_DIR": str(settings.cache_dir),
        "KC_API_KEYS": ",".join(k.get_secret_value() for k in settings.api_keys),
        "KC_ADMIN_KEYS": ",".join(k.get_secret_value() for k in settings.admin_keys),
        "KC_REQUEST_TIMEOUT_S": str(settings.request_timeout_s),
        "KC_LIVENESS_REFRESH_S": str(settings.liveness_refresh_s),
        "KC_MAX_IN_FLIGHT": str(settings.max_in_flight),
        "KC_DRAIN_TIMEOUT_S": str(settings.drain_timeout_s),
        "KC_WORKER_METRICS_PORT": "0",
    }
    env.update(extra)
    return env


def worker_process(
    settings: Settings, *models: str, env: dict[str, str] | None = None, stderr: Any = None
) -> process.Child:
    """A worker in its own process (to be killed), configured like ``settings``."""
    args = [a for m in models for a in ("--model", m)]
    command = [*CLI, "worker", *args]
    return process.launch(command, env=process_env(settings, **(env or {})), stderr=stderr)


def answers(url: str) -> bool:
    """Whether a GET of ``url`` answers 200 now."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


async def committed_results(settings: Settings, idle_s: float = 3.0) -> list[ResultMessage]:
    """Every result a read_committed reader sees on the results topic, from the beginning."""
    topic = Topics(settings.topic_prefix).results
    consumer = clients.consumer(
        settings, "kc-test-results", topic, committed_only=True, auto_offset_reset="earliest"
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


async def send_raw(
    settings: Settings, topic: str, records: Iterable[tuple[bytes | None, bytes]]
) -> None:
    """Publish ``(value, key)`` pairs as they are (bytes that need not be messages of ours)."""
    producer = clients.producer(settings, "kc-test-raw")
    await producer.start()
    try:
        for value, key in records:
            await producer.send_and_wait(topic, value, key)
    finally:
        await producer.stop()


async def dead_letters(settings: Settings, count: int, timeout_s: float = 30) -> list[Record]:
    """The first ``count`` records of the DLQ (fewer if they do not come within the timeout)."""
    dlq = clients.consumer(
        settings,
        "kc-test-dlq",
        Topics(settings.topic_prefix).dlq,
        committed_only=True,
        auto_offset_reset="earliest",
    )
    await dlq.start()
    records: list[Record] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(records) < count and time.monotonic() < deadline:
            batch = await dlq.getmany(timeout_ms=500)
            records += [r for rs in batch.values() for r in rs]
    finally:
        await dlq.stop()
    return records


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


@contextlib.asynccontextmanager
async def echo_through(settings: Settings, backend: Backend) -> AsyncIterator[httpx.AsyncClient]:
    """A front end before a worker serving ``echo`` with ``backend``, closed before it stops."""
    try:
        async with (
            backend_worker(settings, load_registry().get("echo"), backend),
            front_end(settings) as client,
        ):
            await wait_live(client, "echo")
            yield client
            await backend.aclose()  # a backend holding tasks lets the worker stop
    finally:
        await backend.aclose()


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
    port = process.free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    args = [command, "serve", "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    if pinned:
        args.insert(2, str(checkpoint))
    child = process.launch(args, cwd=workdir, env=env, log=workdir / "serve.log")
    try:
        health = f"http://127.0.0.1:{port}/health"
        process.wait_ready(lambda: answers(health), [child], "transformers serve", timeout_s)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.stop(child, timeout_s=10)


class ScriptedBackend:
    """The Backend surface for a test's own ``run``: never throttled, nothing to close."""

    capacity = 16

    def throttled_until(self) -> float:
        """Never throttled."""
        return 0.0

    def cancel(self, request_id: str) -> None:
        """Nothing to stop."""

    async def aclose(self) -> None:
        """Nothing to release."""
