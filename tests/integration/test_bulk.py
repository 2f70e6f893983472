"""Bulk jobs end to end: submit (a batch) -> bulk lanes -> real workers -> collect, on a real
broker; resubmission, retries of failed lines, other content refused."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from producer.jobs import JobError, JobFileInvalid, collect, job_status, list_jobs, submit
from producer.jobs.batch.output import batch_results
from producer.jobs.batch.reader import scan
from producer.jobs.batch.session import opened
from producer.jobs.batch.store import FileStore
from schemas.kafka import ensure_topics
from schemas.metrics import WorkerMetrics
from schemas.registry import ModelSpec, load_registry
from schemas.settings import Settings
from schemas.topics import Topics
from tests.integration.harness import (
    LOCAL,
    dispatching,
    front_end,
    wait_live,
    worker,
    worker_process,
)
from worker.backend import Backend, create_backend
from worker.backends.echo import echo_text
from worker.service import serve_models
from worker.task import Delta, Outcome, Task

pytestmark = [pytest.mark.kafka]


def write_job(path: Path, n: int, model: str | list[str] = "echo", **body: Any) -> Path:
    """A job file of ``n`` lines with custom ids l0000.. and prompts naming their line."""
    with path.open("w") as f:
        for i in range(n):
            line = {"custom_id": f"l{i:04d}", "prompt": f"line {i} says hello", "model": model}
            f.write(json.dumps(line | {"max_tokens": 4} | body) + "\n")
    return path


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(t) for t in path.read_text().splitlines()]


async def count_records(settings: Settings, topics: list[str]) -> int:
    total = 0
    async with aclosing(scan(settings, topics)) as batches:
        async for batch in batches:
            total += len(batch)
    return total


async def test_a_thousand_line_job_collects_once_and_resumes(
    settings: Settings, tmp_path: Path
) -> None:
    job_file = write_job(tmp_path / "job.jsonl", 1000)
    out = tmp_path / "out.jsonl"
    async with dispatching(settings), worker(settings, "echo"):
        started = time.perf_counter()
        report = await submit(settings, job_file, job_id="echo-1k")
        submitted = time.perf_counter()
        result = await collect(settings, "echo-1k", out, timeout_s=60, progress=False)
        collected = time.perf_counter()
        assert report.published == 1000 and result.complete
        assert (result.job.completed, result.job.failed, result.written) == (1000, 0, 1000)
        again = await submit(settings, job_file, job_id="echo-1k")
        second = await collect(settings, "echo-1k", out, timeout_s=30, progress=False)
    print(
        f"\necho 1,000 lines: submit {submitted - started:.2f} s "
        f"({1000 / (submitted - started):.0f} lines/s), end to end {collected - started:.2f} s "
        f"({1000 / (collected - started):.0f} lines/s), collect {collected - submitted:.2f} s"
    )
    lines = read_lines(out)
    assert sorted(b["custom_id"] for b in lines) == [f"l{i:04d}" for i in range(1000)]
    for body in lines:
        i = int(body["custom_id"][1:])
        answer = body["response"]["body"]
        assert answer["choices"][0]["text"] == echo_text(f"line {i} says hello", 4)
    assert again.published == 0 and again.batch is None and "already submitted" in again.note
    assert (second.written, second.replaced) == (0, 0)
    assert len(read_lines(out)) == 1000
    assert await count_records(settings, [Topics(settings.topic_prefix).bulk("echo")]) == 1000

    out.write_text("".join(t + "\n" for t in out.read_text().splitlines()[:700]))
    resumed = await collect(settings, "echo-1k", out, timeout_s=30, progress=False)
    assert resumed.written == 300
    assert sorted(b["custom_id"] for b in read_lines(out)) == [f"l{i:04d}" for i in range(1000)]
    status = await job_status(settings, "echo-1k")
    assert (status.completed, status.failed, status.pending) == (1000, 0, 0)
    assert status.latest.status == "completed" and report.batch is not None
    assert [b.id for b in status.batches] == [report.batch.id]
    assert [j.name for j in await list_jobs(settings)] == ["echo-1k"]


async def test_an_invalid_file_is_refused_and_nothing_is_published(
    settings: Settings, tmp_path: Path
) -> None:
    job_file = write_job(tmp_path / "job.jsonl", 5)
    lines = job_file.read_text().splitlines()
    lines[1] = json.dumps({"custom_id": "x", "prompt": "p", "model": "echo", "top_p": 1.5})
    lines[3] = lines[0]  # the custom_id of line 1 again
    job_file.write_text("\n".join(lines) + "\n")
    await ensure_topics(settings, ["echo"])
    with pytest.raises(JobFileInvalid) as refused:
        await submit(settings, job_file, job_id="bad")
    message = str(refused.value)
    assert "line 2: top_p" in message and "line 4: custom_id 'l0000'" in message
    assert "line 1" in message
    topics = Topics(settings.topic_prefix)
    assert await count_records(settings, [topics.bulk("echo"), topics.batches]) == 0
    skipped = await submit(settings, job_file, job_id="ok", skip_invalid=True)
    assert skipped.published == 3 and [p.number for p in skipped.skipped] == [2, 4]
    assert skipped.batch is not None and skipped.batch.total == 3
    async with dispatching(settings):
        await _wait_for_handed_out(settings, skipped.batch.id, 3)
    assert await count_records(settings, [topics.bulk("echo")]) == 3


async def test_a_line_only_a_vendors_range_refuses_is_named_before_publishing(
    settings: Settings, tmp_path: Path
) -> None:
    job_file = write_job(tmp_path / "job.jsonl", 3)
    lines = job_file.read_text().splitlines()
    cohere = {"custom_id": "c", "prompt": "p", "model": "cohere-command", "max_tokens": 4}
    lines[1] = json.dumps(cohere | {"frequency_penalty": -0.5})  # in the API's range, not Cohere's
    job_file.write_text("\n".join(lines) + "\n")
    await ensure_topics(settings, ["echo", "cohere-command"])
    with pytest.raises(JobFileInvalid) as refused:
        await submit(settings, job_file, job_id="vendor-range")
    assert "line 2: frequency_penalty: cohere-command accepts 0 to 2" in str(refused.value)
    topics = Topics(settings.topic_prefix)
    published = [topics.bulk("echo"), topics.bulk("cohere-command"), topics.batches]
    assert await count_records(settings, published) == 0


async def test_the_same_job_name_with_other_content_is_refused(
    settings: Settings, tmp_path: Path
) -> None:
    first = await submit(settings, write_job(tmp_path / "a.jsonl", 5), job_id="j")
    assert first.published == 5 and first.batch is not None
    other = write_job(tmp_path / "b.jsonl", 5, max_tokens=7)  # same ids, other content
    with pytest.raises(JobError) as refused:
        await submit(settings, other, job_id="j")
    assert "job j was submitted with other content" in str(refused.value)
    again = await submit(settings, tmp_path / "a.jsonl", job_id="j")
    assert again.published == 0 and "already submitted" in again.note
    async with dispatching(settings):
        await _wait_for_handed_out(settings, first.batch.id, 5)
    bulk = Topics(settings.topic_prefix).bulk("echo")
    assert await count_records(settings, [bulk]) == 5  # nothing of the refused file went out


@pytest.mark.model
async def test_a_worker_killed_mid_job_loses_and_duplicates_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    job_file = write_job(tmp_path / "job.jsonl", 200, LOCAL, temperature=0)
    out = tmp_path / "out.jsonl"
    first = worker_process(settings, LOCAL)
    async with dispatching(settings):
        await _kill_mid_job(settings, first, job_file, out)


async def _kill_mid_job(settings: Settings, first: Any, job_file: Path, out: Path) -> None:
    try:
        submitted = await submit(settings, job_file, job_id="kill")
        done = await _wait_for_done(settings, "kill", at_least=40, timeout_s=180)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        print(f"\nkilled the worker with {done} of 200 tasks done")
        assert done < 200, "the job ended before the kill: make it longer"
        second = worker_process(settings, LOCAL)
        try:
            report = await collect(settings, "kill", out, timeout_s=240, progress=False)
        finally:
            second.terminate()
            second.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
    assert report.complete and report.written == 200 and report.job.failed == 0
    again = await collect(settings, "kill", out, timeout_s=30, progress=False)
    assert again.written == 0 and len(read_lines(out)) == 200
    assert len({b["custom_id"] for b in read_lines(out)}) == 200
    assert submitted.batch is not None
    ids = [r.request_id async for r, _ in batch_results(settings, submitted.batch.id)]
    assert len(ids) == len(set(ids)) == 200, "a committed result was lost or duplicated"


async def _wait_for_handed_out(settings: Settings, batch_id: str, lines: int) -> None:
    """Until the dispatcher has handed out ``lines`` lines of the batch."""
    async with opened(settings) as service:
        deadline = time.monotonic() + 30
        while (c := service.book.cursors.get(batch_id)) is None or c.next_line < lines:
            assert time.monotonic() < deadline, f"{batch_id}: not handed out in 30 s"
            await asyncio.sleep(0.1)


async def _wait_for_done(settings: Settings, job_id: str, at_least: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = await job_status(settings, job_id)
        if status.completed >= at_least:
            return status.completed
        await asyncio.sleep(0.5)
    raise TimeoutError(f"{job_id}: fewer than {at_least} tasks done after {timeout_s} s")


class _Spy:
    """A backend wrapper recording the request id of every task the backend is given."""

    def __init__(self, backend: Backend, seen: list[str]) -> None:
        self._backend = backend
        self._seen = seen

    @property
    def capacity(self) -> int:
        return self._backend.capacity

    def throttled_until(self) -> float:
        return self._backend.throttled_until()

    def run(self, tasks: Sequence[Task]) -> AsyncIterator[tuple[Task, Outcome | Delta]]:
        self._seen.extend(t.message.request_id for t in tasks)
        return self._backend.run(tasks)

    def cancel(self, request_id: str) -> None:
        self._backend.cancel(request_id)

    async def aclose(self) -> None:
        await self._backend.aclose()


@contextlib.asynccontextmanager
async def spied_worker(
    settings: Settings, model: str, seen: list[str], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[CollectorRegistry]:
    """An in-process worker whose metrics the test reads and whose backend calls it sees."""
    import worker.service

    async def create(spec: ModelSpec, s: Settings, metrics: WorkerMetrics | None = None) -> Backend:
        return _Spy(await create_backend(spec, s, metrics), seen)

    monkeypatch.setattr(worker.service, "create_backend", create)
    registry = CollectorRegistry()
    stopping = asyncio.Event()
    task = asyncio.create_task(serve_models([model], settings, load_registry(), stopping, registry))
    try:
        yield registry
    finally:
        stopping.set()
        await task


@pytest.mark.model
async def test_expired_tasks_are_skipped_without_the_model_and_retried(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []
    job_file = write_job(tmp_path / "job.jsonl", 5, LOCAL)
    out = tmp_path / "out.jsonl"
    async with dispatching(settings):
        first = await submit(settings, job_file, job_id="late", deadline_s=2)
        assert first.batch is not None
        await _wait_for_handed_out(settings, first.batch.id, 5)  # before the window ends
        await asyncio.sleep(2.5)  # no worker yet: every task's deadline passes in the queue
        await _retried_after_expiry(settings, job_file, out, first, ran, monkeypatch)


async def _retried_after_expiry(
    settings: Settings,
    job_file: Path,
    out: Path,
    first: Any,
    ran: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with spied_worker(settings, LOCAL, ran, monkeypatch) as metrics:
        expired = await collect(settings, "late", out, timeout_s=120, progress=False)
        assert (expired.job.completed, expired.job.failed) == (0, 5)
        assert expired.job.latest.status == "expired"
        assert {b["error"]["code"] for b in read_lines(out)} == {"batch_expired"}
        assert ran == [], "the model was given an expired task"
        labels = {"model": LOCAL, "outcome": "deadline_exceeded"}
        assert metrics.get_sample_value("kc_worker_tasks_total", labels) == 5
        assert not metrics.get_sample_value("kc_worker_prompt_tokens_total", {"model": LOCAL})

        retry = await submit(settings, job_file, job_id="late", retry_failed=True)
        assert retry.published == 5 and retry.batch is not None and first.batch is not None
        assert (retry.batch.metadata or {})["kc_retry_of"] == first.batch.id
        retried = await collect(settings, "late", out, timeout_s=180, progress=False)
    done = retried.job
    assert (done.completed, done.failed, retried.replaced, retried.written) == (5, 0, 5, 0)
    assert [b.id for b in done.batches] == [first.batch.id, retry.batch.id]
    assert len(ran) == 5
    assert all(b["response"] for b in read_lines(out)) and len(read_lines(out)) == 5


@pytest.mark.model
async def test_interactive_requests_overtake_a_running_bulk_job(
    settings: Settings, tmp_path: Path
) -> None:
    body = {"prompt": "Name a colour.", "model": LOCAL, "max_tokens": 8, "temperature": 0}
    job_file = write_job(tmp_path / "job.jsonl", 2000, LOCAL, max_tokens=8)
    async with worker(settings, LOCAL), front_end(settings) as client:
        await wait_live(client, LOCAL)
        idle = [await _timed(client, body) for _ in range(2)]
        submitted = await submit(settings, job_file, job_id="big")
        await _wait_for_done(settings, "big", at_least=16, timeout_s=120)
        busy = []
        for _ in range(3):
            busy.append(await _timed(client, body))
            await asyncio.sleep(0.2)
        status = await job_status(settings, "big")
    assert submitted.batch is not None
    batch_s = _bulk_batch_seconds([r async for r, _ in batch_results(settings, submitted.batch.id)])
    backlog_s = status.pending / 16 * batch_s
    print(
        f"\nlanes: interactive idle {_fmt(idle)}; with the 2,000-line job running {_fmt(busy)}; "
        f"bulk batch (16 x 8 tokens) median {batch_s:.2f} s; "
        f"{status.completed} done, backlog {status.pending} lines = {backlog_s:.0f} s"
    )
    assert status.pending > 1000, "the job must still be running while we measure"
    # Without lanes a request queues behind the bulk batch waiting in the backend as well as
    # the one generating (two batches or more); with lanes it waits for at most one.
    bound = statistics.median(idle) + 1.6 * batch_s + 0.5
    assert statistics.median(busy) < bound, (busy, bound)
    assert max(busy) < backlog_s / 10


async def _timed(client: httpx.AsyncClient, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    response = await client.post("/v1/completion", json=body)
    assert response.status_code == 200, response.text
    return time.perf_counter() - started


def _bulk_batch_seconds(results: Sequence[Any]) -> float:
    times = [r.choice.prediction_time_ms for r in results if r.job_id and r.choice]
    return float(statistics.median(times)) / 1000


def _fmt(seconds: list[float]) -> str:
    return "/".join(f"{s:.2f}" for s in seconds) + " s"


async def test_a_line_that_is_not_utf8_is_named_and_a_line_separator_in_a_prompt_is_kept(
    settings: Settings, tmp_path: Path
) -> None:
    kept = {"custom_id": "sep", "prompt": "one\u2028two", "model": "echo"}  # U+2028 in JSON
    job_file = tmp_path / "job.jsonl"
    job_file.write_bytes(
        json.dumps({"custom_id": "a", "prompt": "p", "model": "echo"}).encode()
        + b"\n\xff\xfe not text\n"
        + json.dumps(kept, ensure_ascii=False).encode()
        + b"\n"
    )
    with pytest.raises(JobFileInvalid, match=r"line 2: not UTF-8"):
        await submit(settings, job_file, job_id="bytes")
    report = await submit(settings, job_file, job_id="bytes", skip_invalid=True)
    assert report.published == 2 and [p.number for p in report.skipped] == [2]
    assert report.batch is not None
    async with opened(settings) as service:
        content = await FileStore(settings, service.producer).read(
            service.book.files[report.batch.input_file_id]
        )
    lines = [json.loads(t) for t in content.decode().split("\n") if t]
    assert [x["body"]["prompt"] for x in lines] == ["p", "one\u2028two"]
