"""``kafka-completions worker``: one process serving one or more models.

Each model gets its backend (loaded before the consumer joins the group, so a live group
member is always ready to serve), its consumer group member and its transactional producer.
Metrics are served on ``KC_WORKER_METRICS_PORT`` (0 picks a free port, logged at start).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Any

from aiokafka.errors import ProducerFenced
from prometheus_client import CollectorRegistry, start_http_server

from schemas import tracing
from schemas.errors import ConfigError
from schemas.kafka import ensure_topics
from schemas.metrics import WorkerMetrics
from schemas.ports import binding
from schemas.registry import Registry
from schemas.settings import Settings
from worker.backend import Backend, create_backend
from worker.identity import claim_slot
from worker.loop import ModelWorker

log = logging.getLogger(__name__)


async def serve_models(
    models: list[str],
    settings: Settings,
    registry: Registry,
    stopping: asyncio.Event,
    metrics_registry: CollectorRegistry | None = None,
) -> None:
    """Load the models' backends and serve them until ``stopping`` is set."""
    specs = [registry.get(name) for name in models]
    for spec in specs:
        reason = spec.unavailable_reason(settings)
        if reason:
            raise ConfigError(f"cannot serve {spec.name}: {reason}")
    metrics = WorkerMetrics.create(metrics_registry or CollectorRegistry())
    metrics.gpu_memory.set_function(_gpu_memory_bytes)
    await ensure_topics(settings, models)
    scope = settings.topic_prefix + "+".join(sorted(models))
    slot = claim_slot(settings.cache_dir / "worker-slots", scope, settings.worker_id)
    worker_id = slot.worker_id
    backends: list[Backend] = []
    try:
        for spec in specs:
            backends.append(await create_backend(spec, settings, metrics))
        workers = [
            ModelWorker(spec, backend, settings, metrics, worker_id)
            for spec, backend in zip(specs, backends, strict=True)
        ]
        await asyncio.gather(*(w.run(stopping) for w in workers))
    finally:
        for backend in backends:
            await backend.aclose()
        slot.release()


def _gpu_memory_bytes() -> float:
    # Only a worker whose backend imported torch can have CUDA memory; never import it here.
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return 0.0
    return float(torch.cuda.memory_allocated())


def _unread_fences(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """aiokafka leaves the record batches of a fenced producer failed with nobody to read them;
    the worker handles the fence (``ModelWorker``, one warning), so those reports are dropped
    and every other one goes to asyncio's handler."""
    future = context.get("future")
    if isinstance(context.get("exception"), ProducerFenced) and not isinstance(
        future, asyncio.Task
    ):
        return
    loop.default_exception_handler(context)


def run_worker(models: list[str], settings: Settings, registry: Registry) -> None:
    """The blocking entry point: metrics endpoint, signal handling, serve."""
    metrics_registry = CollectorRegistry()
    port = settings.worker_metrics_port
    with binding("KC_WORKER_METRICS_PORT", settings.host, port):
        server, _ = start_http_server(port, addr=settings.host, registry=metrics_registry)
    log.info("worker metrics on http://%s:%d/metrics", settings.host, server.server_port)

    async def main() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_unread_fences)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        await serve_models(models, settings, registry, stopping, metrics_registry)

    shutdown_tracing = tracing.install(settings, "kafka-completions-worker")
    try:
        asyncio.run(main())
    finally:
        shutdown_tracing()
        server.shutdown()
