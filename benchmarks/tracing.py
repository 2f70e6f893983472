"""B4: what tracing costs the pipeline: B2's fixed-rate load on echo, tracing off, then on.

On, the front end and the worker export every span over OTLP/HTTP (``OTEL_EXPORTER_OTLP_
ENDPOINT``) to a local sink, a process of its own that answers every export as a collector
does and counts them; off, no endpoint is set and no SDK is installed. Each run also reports
the CPU time the front end and the worker spent per request, the figure a shared machine
disturbs least.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.sharedctypes import Synchronized

import psutil
from devstack.process import free_port

from benchmarks.pipeline import ECHO, at_rate
from benchmarks.stack import Stack, service
from benchmarks.stats import Run

_WARM_UP = 20  # at_rate's requests before the measured ones


def _serve_sink(port: int, exports: Synchronized[int]) -> None:
    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with exports.get_lock():
                exports.value += 1
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    ThreadingHTTPServer(("127.0.0.1", port), Sink).serve_forever()


@contextlib.contextmanager
def sink() -> Iterator[tuple[str, Synchronized[int]]]:
    """An OTLP/HTTP endpoint that accepts every export; its URL and its count of exports."""
    port = free_port()
    exports: Synchronized[int] = multiprocessing.Value("i", 0)
    child = multiprocessing.Process(target=_serve_sink, args=(port, exports), daemon=True)
    child.start()
    try:
        yield f"http://127.0.0.1:{port}", exports
    finally:
        child.terminate()
        child.join(5)


def _cpu_s(stack: Stack) -> dict[str, float]:
    def used(pid: int) -> float:
        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)

    return {"front_end": used(stack.front_pid), "worker": used(stack.worker_pid)}


async def _measured(bootstrap: str, env: dict[str, str], rate: float, s: float, label: str) -> Run:
    async with service(bootstrap, [ECHO], env) as stack:
        before = _cpu_s(stack)
        run = await at_rate(stack, rate, s, label, name="B4")
        after = _cpu_s(stack)
    requests = len(run.latencies_s) + run.errors + _WARM_UP
    for part, spent in before.items():
        run.extra[f"{part}_cpu_ms_per_request"] = round((after[part] - spent) * 1000 / requests, 3)
    return run


async def b4(bootstrap: str, rate: float, duration_s: float) -> list[Run]:
    """The same load with tracing off, then on (exporting every span to a local sink)."""
    load = f"{rate:g} req/s for {duration_s:g} s"
    runs = [await _measured(bootstrap, {}, rate, duration_s, f"{load}, tracing off")]
    with sink() as (endpoint, exports):
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
        run = await _measured(bootstrap, env, rate, duration_s, f"{load}, tracing on")
        run.extra["otlp_exports_received"] = exports.value
    return [*runs, run]
