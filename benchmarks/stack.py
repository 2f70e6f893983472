"""Our service for a benchmark: a local Kafka broker, a worker and a front end, as processes.

Each part runs in its own process (as deployed), so its RSS is its own and the load
generator's event loop is not theirs. The broker is devstack's ``LocalBroker`` on free ports.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
from devstack import process
from devstack.broker import DEFAULT_CACHE_DIR, LocalBroker

API_KEY = "kc-bench-key"
HEADERS = {"Authorization": f"Bearer {API_KEY}"}


@dataclass(frozen=True, slots=True)
class Stack:
    """A running front end and worker on one broker."""

    bootstrap: str
    prefix: str
    port: int
    front_pid: int
    worker_pid: int

    def rss_mb(self) -> dict[str, float]:
        """Resident memory of the front end and the worker, in MB."""
        return {
            "front_end_rss_mb": round(psutil.Process(self.front_pid).memory_info().rss / 1e6, 1),
            "worker_rss_mb": round(psutil.Process(self.worker_pid).memory_info().rss / 1e6, 1),
        }


@contextlib.contextmanager
def local_broker() -> Iterator[LocalBroker]:
    """A fresh single-node broker for the whole benchmark run (its files in a temporary folder)."""
    with tempfile.TemporaryDirectory(prefix="kc-bench-") as tmp:
        cache = Path(os.environ.get("KC_CACHE_DIR") or DEFAULT_CACHE_DIR).expanduser()
        with LocalBroker(Path(tmp) / "broker", cache, port=0, controller_port=0) as b:
            yield b


@contextlib.contextmanager
def broker() -> Iterator[str]:
    """The bootstrap address of a fresh broker, for benchmarks that need nothing else."""
    with local_broker() as b:
        yield b.bootstrap


@contextlib.asynccontextmanager
async def service(
    bootstrap: str, models: list[str], env: dict[str, str] | None = None
) -> AsyncIterator[Stack]:
    """A worker serving ``models`` and a front end, on a topic prefix of their own."""
    prefix = f"bench{int(time.time() * 1000) % 10**9}."
    port = process.free_port()
    common = {
        **os.environ,
        "KC_KAFKA_BOOTSTRAP": bootstrap,
        "KC_TOPIC_PREFIX": prefix,
        "KC_API_KEYS": API_KEY,
        "KC_PORT": str(port),
        "KC_WORKER_METRICS_PORT": "0",
        "KC_LOG_LEVEL": "WARNING",
        **(env or {}),
    }
    args = [a for m in models for a in ("--model", m)]
    cli = [sys.executable, "-m", "producer.cli"]
    # Quiet servers: their stdout would interleave with the benchmark's table.
    worker = process.launch([*cli, "worker", *args], env=common, stdout=subprocess.DEVNULL)
    front = process.launch([*cli, "serve"], env=common, stdout=subprocess.DEVNULL)
    try:
        await _wait_live(port, models, [worker, front])
        yield Stack(bootstrap, prefix, port, front.pid, worker.pid)
    finally:
        process.stop(front, worker)


async def _wait_live(port: int, models: list[str], procs: list[process.Child]) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=HEADERS) as c:

        async def live() -> bool:
            try:
                listed = (await c.get("/v1/models")).json()["data"]
            except httpx.HTTPError:
                return False
            return set(models) <= {m["id"] for m in listed if m["live_workers"] > 0}

        await process.await_ready(live, procs, f"a live worker for {models}", 180)
