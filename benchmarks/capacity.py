"""``python -m benchmarks.capacity [--quick]``: the per-hop costs docs/capacity.md starts from.

The "2x2 run": two front ends (reply partitions 0 and 1) and two ``echo`` workers on one local
broker, each part a process of its own. Two measurements:

1. Hops: an open-loop rate of ``POST /v1/completion`` spread over both front ends; per topic
   (internal ones included), records and bytes the broker took per second and per request
   (``benchmarks.hops``).
2. Rebalance: under a probe load, one worker is SIGKILLed and a replacement started at once;
   the seconds from the kill until the replacement finishes its first task, until the last
   stalled caller is answered, and the longest wait a caller saw. Twice: a replacement on the
   same host (it claims the dead worker's slot, so its transactional id, and fences the dead
   producer at once), then one with a new identity (a Kubernetes Deployment's new pod: the
   dead transaction stays open until its timeout); then one more worker joins, as a
   scale-out does (every member of the group gives its partitions back while it rebalances).

Prints the table and writes JSON to ``benchmarks/results/capacity-<UTC time>.json``. The
echo model does no inference, so the figures are the pipeline's own costs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from devstack import process

from benchmarks.hops import per_topic, snapshot
from benchmarks.http import Pool
from benchmarks.stack import API_KEY, HEADERS, local_broker

ECHO = "echo"
RESULTS = Path(__file__).parent / "results"
_CLI = [sys.executable, "-m", "producer.cli"]
_STALLED_S = 1.0  # a probe answered later than this was held up by the kill
_SESSION_S = 12.0  # past the consumers' session timeout (aiokafka's 10 s): the group is settled


@dataclass(slots=True)
class Fleet:
    """Two front ends and two workers of ``echo`` on one broker, under one topic prefix."""

    bootstrap: str
    prefix: str = field(default_factory=lambda: f"cap{int(time.time() * 1000) % 10**9}.")
    ports: list[int] = field(default_factory=list)
    workers: list[tuple[process.Child, int]] = field(default_factory=list)
    children: list[process.Child] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of every part."""
        return {
            **os.environ,
            "KC_KAFKA_BOOTSTRAP": self.bootstrap,
            "KC_TOPIC_PREFIX": self.prefix,
            "KC_API_KEYS": API_KEY,
            "KC_LOG_LEVEL": "WARNING",
            **extra,
        }

    def start_front_end(self, reply_partition: int) -> None:
        """A front end owning ``reply_partition``."""
        port = process.free_port()
        env = self.env(KC_PORT=str(port), KC_REPLY_PARTITION=str(reply_partition))
        self.children.append(process.launch([*_CLI, "serve"], env=env, stdout=subprocess.DEVNULL))
        self.ports.append(port)

    def start_worker(self, **extra: str) -> tuple[process.Child, int]:
        """A worker of ``echo`` whose metrics port is known (to see when it serves)."""
        port = process.free_port()
        env = self.env(KC_WORKER_METRICS_PORT=str(port), **extra)
        cmd = [*_CLI, "worker", "--model", ECHO]
        child = process.launch(cmd, env=env, stdout=subprocess.DEVNULL)
        self.children.append(child)
        self.workers.append((child, port))
        return child, port

    async def wait_live(self, workers: int) -> None:
        """Until every front end sees ``workers`` live workers of echo."""

        async def live() -> bool:
            return all([await _live_workers(port) >= workers for port in self.ports])

        await process.await_ready(live, self.children, f"{workers} live echo workers", 180)


async def _live_workers(port: int) -> int:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=HEADERS) as c:
        try:
            listed = (await c.get("/v1/models")).json()["data"]
        except httpx.HTTPError:
            return 0
    return sum(m["live_workers"] for m in listed if m["id"] == ECHO)


async def _tasks_done(metrics_port: int) -> float:
    """The worker's ``kc_worker_tasks_total``, summed over its labels (0 before it listens)."""
    try:
        async with httpx.AsyncClient() as c:
            text = (await c.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    except httpx.HTTPError:
        return 0.0
    lines = [ln for ln in text.splitlines() if ln.startswith("kc_worker_tasks_total{")]
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines)


@contextlib.asynccontextmanager
async def two_by_two(bootstrap: str) -> AsyncIterator[Fleet]:
    """The running 2x2 fleet; every process stopped at the end."""
    fleet = Fleet(bootstrap)
    try:
        for partition in (0, 1):
            fleet.start_front_end(partition)
        for _ in range(2):
            fleet.start_worker()
        await fleet.wait_live(2)
        yield fleet
    finally:
        process.stop(*fleet.children)


@dataclass(slots=True)
class Probe:
    """Requests at a fixed rate over every front end, each kept as (sent, waited, status)."""

    fleet: Fleet
    body: dict[str, Any]
    sent: list[tuple[float, float, int]] = field(default_factory=list)

    async def run(self, rate: float, seconds: float | None, stop: asyncio.Event) -> None:
        """Send at ``rate`` for ``seconds`` (or until ``stop``), then wait for every answer."""
        pools = [Pool("127.0.0.1", port, 256) for port in self.fleet.ports]
        tasks = []
        began = time.monotonic()
        try:
            for i in range(10**9):
                due = began + i / rate
                if stop.is_set() or (seconds is not None and due - began >= seconds):
                    break
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                tasks.append(asyncio.create_task(self._one(pools[i % len(pools)])))
            await asyncio.gather(*tasks)
        finally:
            for pool in pools:
                await pool.close()

    async def _one(self, pool: Pool) -> None:
        started = time.monotonic()
        try:
            status, _ = await pool.post("/v1/completion", self.body, HEADERS)
        except (OSError, asyncio.IncompleteReadError):
            status = 0
        self.sent.append((started, time.monotonic() - started, status))


async def hops(
    fleet: Fleet, log_dir: Path, body: dict[str, Any], rate: float, seconds: float
) -> dict[str, Any]:
    """Per-topic records and bytes under ``rate`` requests/s for ``seconds``."""
    await Probe(fleet, body).run(rate, 2.0, asyncio.Event())  # warm-up, not counted
    before = await snapshot(fleet.bootstrap, log_dir)
    probe = Probe(fleet, body)
    began = time.monotonic()
    await probe.run(rate, seconds, asyncio.Event())
    elapsed = time.monotonic() - began
    after = await snapshot(fleet.bootstrap, log_dir)
    ok = sum(1 for *_, status in probe.sent if status == 200)
    return {
        "requests": len(probe.sent),
        "answered_200": ok,
        "requests_per_s": round(len(probe.sent) / elapsed, 1),
        "request_body_bytes": len(json.dumps(body)),
        "topics": per_topic(before, after, elapsed, len(probe.sent), fleet.prefix),
    }


# How a rebalance starts: a worker began and replaced on its slot (its transactional id) or
# with a new identity (a Kubernetes pod), or one more worker joining (a scale-out).
EVENTS = ("same slot", "new identity", "join")


async def rebalance(
    fleet: Fleet, body: dict[str, Any], rate: float, timeout_s: float, event: str
) -> dict[str, Any]:
    """Under a probe load: the event, then the time until the new worker serves."""
    probe, stop = Probe(fleet, body), asyncio.Event()
    load = asyncio.create_task(probe.run(rate, None, stop))
    await asyncio.sleep(3.0)  # steady state first
    began = time.monotonic()
    if event != "join":
        victim = next(child for child, _ in fleet.workers if child.poll() is None)
        os.kill(victim.pid, signal.SIGKILL)
    identity = {"KC_WORKER_ID": f"new-{len(fleet.workers)}-{os.getpid()}"}
    _, port = fleet.start_worker(**(identity if event != "same slot" else {}))
    served = None
    while time.monotonic() - began < timeout_s:
        if served is None and await _tasks_done(port) > 0:
            served = time.monotonic() - began
        if served is not None and time.monotonic() - began > served + 5.0:
            break
        await asyncio.sleep(0.1)
    stop.set()
    await load
    after = [(s - began, w, status) for s, w, status in probe.sent if s >= began - 1.0]
    stalled = [s + w for s, w, _ in after if w > _STALLED_S]
    return {
        "event": event,
        "probe_rate": rate,
        "new_worker_first_task_s": None if served is None else round(served, 2),
        "last_stalled_answer_s": round(max(stalled), 2) if stalled else 0.0,
        "longest_wait_s": round(max((w for _, w, _ in after), default=0.0), 2),
        "stalled_requests": len(stalled),
        "non_200": sum(1 for *_, status in after if status != 200),
    }


def _print(report: dict[str, Any]) -> None:
    load = report["hops"]
    print(f"hops: {load['requests_per_s']} req/s, {load['answered_200']}/{load['requests']} x 200")
    columns = ("topic", "records_per_s", "bytes_per_s", "records_per_request", "bytes_per_request")
    print(" | ".join(columns))
    print(" | ".join("---" for _ in columns))
    for row in load["topics"]:
        print(" | ".join(str(row[c]) for c in columns))
    for run in report["rebalance"]:
        print("rebalance: " + ", ".join(f"{k}={v}" for k, v in run.items()))


async def _measure(args: argparse.Namespace) -> dict[str, Any]:
    # Words of five bytes, as text is: echo cycles the prompt's words, so the completion is
    # about 5 bytes a token (one long word would make each token as long as the prompt).
    prompt = ("word " * (args.prompt_bytes // 5 + 1))[: args.prompt_bytes]
    body = {"model": ECHO, "prompt": prompt, "max_tokens": args.max_tokens}
    with local_broker() as broker:
        async with two_by_two(broker.bootstrap) as fleet:
            load = await hops(fleet, broker.log_dir, body, args.rate, args.seconds)
            recovery = []
            for event in EVENTS:
                recovery.append(
                    await rebalance(fleet, body, args.probe_rate, args.kill_timeout, event)
                )
                await asyncio.sleep(_SESSION_S)  # the dead member leaves the group first
    return {"hops": load, "rebalance": recovery}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.capacity", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short, light run (a smoke test)")
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s while measuring hops")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the hops window")
    parser.add_argument("--probe-rate", type=float, default=20.0, help="requests/s around the kill")
    parser.add_argument("--kill-timeout", type=float, default=120.0, help="give up after, seconds")
    parser.add_argument("--prompt-bytes", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=16)
    return parser


def main() -> None:
    """Run both measurements, print them, write the JSON."""
    args = _parser().parse_args()
    if args.quick:
        args.rate, args.seconds = min(args.rate, 50.0), min(args.seconds, 5.0)
    logging.basicConfig(level=logging.WARNING)
    report = asyncio.run(_measure(args))
    report["meta"] = {
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": platform.platform(),
        "cpus": len(os.sched_getaffinity(0)),
        "args": vars(args),
    }
    _print(report)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / time.strftime("capacity-%Y%m%dT%H%M%SZ.json", time.gmtime())
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
