"""B1's decode loop alone: tokens/s per parameter set, time to first token, rows per step.

``python -m benchmarks.admission [--requests N] [--concurrency C] [--profile] [--service]``.
Closed-loop clients hand tasks straight to the local backend (no HTTP, no Kafka), so the
figures are the loop's own: tokens/s for each of B1's parameter sets, run alternately in one
process (plain, nucleus, spec, plain: the ratios are what the noisy shared machine lets one
trust), time to first token (a task's queueing until the prefill that samples its first
token), and the batch's rows at every decode step, to show whether rows come in waves or the
batch stays full. ``--profile`` adds each cell's time by phase (``benchmarks.phases``);
``--service`` then runs the same cells through the front end and Kafka, and prints the share of
their time that HTTP and Kafka add (one minus the loop's time a token over the service's).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

from benchmarks.local import (
    MODEL,
    NEW_TOKENS,
    OURS,
    PARAMS,
    closed_cell,
    model_dir,
    our_request,
    prompt,
)
from benchmarks.phases import Phases
from benchmarks.stack import broker, service
from benchmarks.stats import Run, percentile
from schemas.registry import load_registry
from schemas.settings import Settings
from schemas.wire import ChatMessage, Sampling, TaskMessage
from worker.backends.transformers import TransformersBackend
from worker.decode import DecodeBatch
from worker.task import Completion, Delta, Task


class _Probe:
    """Records each decode step's rows and each admission's time (wrapping the batch)."""

    def __init__(self, batch: DecodeBatch) -> None:
        self.rows: list[int] = []
        self.admitted: dict[str, float] = {}
        step, admit = batch.step, batch.admit

        def counted_step() -> Any:
            self.rows.append(len(batch.rows))
            return step()

        def timed_admit(joining: Any) -> Any:
            out = admit(joining)
            now = time.perf_counter()
            for row in joining:
                self.admitted[row.handle.task.message.request_id] = now
            return out

        batch.step = counted_step  # type: ignore[method-assign]
        batch.admit = timed_admit  # type: ignore[method-assign]


def _task(i: int, params: str) -> Task:
    p = PARAMS[params]
    sampling = Sampling(
        max_tokens=NEW_TOKENS,
        temperature=p["temperature"],
        top_p=p["top_p"],
        stop=tuple(p.get("stop", ())),
        presence_penalty=p.get("presence_penalty", 0.0),
        frequency_penalty=p.get("frequency_penalty", 0.0),
    )
    message = TaskMessage(
        request_id=uuid.uuid4().hex,
        choice_index=0,
        model=MODEL,
        prompt=prompt(i),
        messages=(ChatMessage(role="user", content=prompt(i)),),
        sampling=sampling,
        enqueued_at=time.time(),
    )
    now = time.time()
    return Task(message, "bench", 0, i, now, now)


async def _cell(
    backend: TransformersBackend, probe: _Probe, params: str, n: int, c: int, phases: Phases | None
) -> Run:
    run = Run("B1-loop", "ours (decode loop)", f"c={c} {params}")
    counter = iter(range(n))
    firsts: list[float] = []
    probe.rows.clear()
    if phases is not None:
        phases.clear()

    async def client() -> None:
        for i in counter:
            task = _task(i, params)
            sent = time.perf_counter()
            async for _, event in backend.run([task]):
                if isinstance(event, Delta):
                    continue
                tokens = event.completion_tokens if isinstance(event, Completion) else None
                if tokens is None:
                    run.errors += 1
                else:
                    run.ok(time.perf_counter() - sent, tokens)
            firsts.append(probe.admitted.pop(task.message.request_id, sent) - sent)

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(c)))
    run.elapsed_s = time.perf_counter() - began
    run.extra = _shape(probe.rows, firsts, c)
    if phases is not None:
        run.extra["phases"] = phases.shares(run.elapsed_s)
    return run


def _shape(rows: list[int], firsts: list[float], c: int) -> dict[str, Any]:
    """Time to first token, and how full the batch stayed over the run's steps."""
    steps = len(rows) or 1
    tenth = max(1, len(rows) // 10)
    return {
        "ttft_p50_ms": round(percentile(firsts, 50) * 1000, 1),
        "ttft_p99_ms": round(percentile(firsts, 99) * 1000, 1),
        "rows_per_step_mean": round(sum(rows) / steps, 1),
        "steps_at_90pct_rows": round(sum(r >= 0.9 * c for r in rows) / steps, 2),
        # Mean rows in each tenth of the run: waves show as dips between full stretches.
        "rows_by_tenth": [
            round(sum(rows[i : i + tenth]) / tenth, 1) for i in range(0, len(rows), tenth)
        ][:10],
    }


async def loop_runs(
    requests: int, concurrency: int, order: list[str], profile: bool = False
) -> list[Run]:
    """The cells in ``order`` (parameter-set names), one backend, warmed up first."""
    settings = Settings(
        device="cpu", worker_max_batch=concurrency, cache_dir=model_dir().parents[1]
    )
    backend = await TransformersBackend.load(load_registry().get(MODEL), settings)
    probe = _Probe(backend._batch)
    phases = Phases(backend._batch) if profile else None
    try:
        await _cell(backend, probe, "plain", concurrency, concurrency, phases)  # warm-up
        return [await _cell(backend, probe, p, requests, concurrency, phases) for p in order]
    finally:
        await backend.aclose()


async def service_runs(requests: int, concurrency: int, order: list[str]) -> list[Run]:
    """The same cells through the front end and Kafka (``benchmarks.local``'s ``ours``)."""
    env = {"KC_WORKER_MAX_BATCH": str(concurrency)}
    with broker() as bootstrap:
        async with service(bootstrap, [MODEL], env) as stack:
            return [
                await closed_cell(OURS, stack.port, our_request(p), requests, concurrency, p)
                for p in order
            ]


def kafka_shares(loop: list[Run], served: list[Run]) -> dict[str, float]:
    """Per parameter set, the share of the service's time a token that HTTP and Kafka add."""
    rates: dict[str, list[float]] = {}
    for run in [*loop, *served]:
        summary = run.summary()
        params = summary["load"].split(" ", 1)[1]
        rates.setdefault(f"{params}:{run.name}", []).append(summary["tokens_per_s"])
    shares = {}
    for params in {r.load.split(" ", 1)[1] for r in served}:
        alone = sum(rates[f"{params}:B1-loop"]) / len(rates[f"{params}:B1-loop"])
        through = sum(rates[f"{params}:B1"]) / len(rates[f"{params}:B1"])
        shares[params] = round(1 - through / alone, 3) if alone else 0.0
    return shares


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> None:
    """Run and print the loop's cells (and the service's, with ``--service``)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.admission", description=__doc__)
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--profile", action="store_true", help="time each phase of the loop")
    parser.add_argument("--service", action="store_true", help="and through HTTP and Kafka")
    args = parser.parse_args(argv)
    order = ["plain", "nucleus", "spec", "plain", "nucleus", "spec"]
    loop = asyncio.run(loop_runs(args.requests, args.concurrency, order, args.profile))
    for run in loop:
        out(str(run.summary()))
    if args.service:
        served = asyncio.run(service_runs(args.requests, args.concurrency, order))
        for run in served:
            out(str(run.summary()))
        out(f"HTTP + Kafka share of the service's time a token: {kafka_shares(loop, served)}")


if __name__ == "__main__":
    main()
