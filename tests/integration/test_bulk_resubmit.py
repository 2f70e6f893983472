"""Bulk resubmission on a real broker: other content refused, an interrupted submission resumed
with only what has no result, and ``collect --timeout`` naming what is missing."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaError

import producer.jobs.manifest
import producer.jobs.submission
from producer.jobs import JobError, collect, submit
from schemas.errors import BrokerUnavailable
from schemas.registry import load_registry
from schemas.settings import Settings
from schemas.topics import Topics
from tests.integration.harness import ScriptedBackend, backend_worker, process_env, worker
from tests.integration.test_bulk import count_records, read_lines, write_job
from worker.task import Completion, Delta, Outcome, Task

pytestmark = [pytest.mark.kafka]


async def test_the_same_job_id_with_other_content_is_refused(
    settings: Settings, tmp_path: Path
) -> None:
    first = await submit(settings, write_job(tmp_path / "a.jsonl", 5), job_id="j", progress=False)
    assert first.published == 5
    other = write_job(tmp_path / "b.jsonl", 5, max_tokens=7)  # same ids, other content
    with pytest.raises(JobError) as refused:
        await submit(settings, other, job_id="j", progress=False)
    assert "job j was submitted with other content" in str(refused.value)
    again = await submit(settings, tmp_path / "a.jsonl", job_id="j", progress=False)
    assert again.published == 0 and "already submitted" in again.note
    bulk = Topics(settings.topic_prefix).bulk("echo")
    assert await count_records(settings, [bulk]) == 5  # nothing of the refused file went out


_ANSWERED = {f"l{i:04d}" for i in range(6)}


class _Partial(ScriptedBackend):
    """Answers the tasks of the lines in ``_ANSWERED`` and holds the others until cancelled."""

    async def run(self, tasks: Sequence[Task]) -> AsyncIterator[tuple[Task, Outcome | Delta]]:
        held = [t for t in tasks if t.message.custom_id not in _ANSWERED]
        for task in tasks:
            if task not in held:
                yield task, Completion("answered", "length", 1, 1, 1)
        if held:
            await asyncio.Event().wait()  # never set: the worker's stop cancels this


def _collect_cli(settings: Settings, job_id: str, out: Path, timeout_s: float) -> Any:
    args = ["collect", "--job", job_id, "-o", str(out), "--timeout", str(timeout_s)]
    return subprocess.run(
        [sys.executable, "-m", "producer.cli", *args, "--no-progress"],
        env=process_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_an_interrupted_submission_resumes_with_only_what_has_no_result(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings.model_copy(update={"drain_timeout_s": 1})
    job_file = write_job(tmp_path / "job.jsonl", 10)
    real_write = producer.jobs.manifest.write_manifest

    async def lose_the_last_write(*args: Any) -> None:
        if args[-1].state == "submitted":  # the tasks are out; the process "dies" now
            raise KafkaError("broker went away")
        await real_write(*args)

    monkeypatch.setattr(producer.jobs.submission, "write_manifest", lose_the_last_write)
    with pytest.raises(BrokerUnavailable, match="submitting it again resumes it"):
        await submit(settings, job_file, job_id="cut", progress=False)
    monkeypatch.undo()

    out = tmp_path / "out.jsonl"
    async with backend_worker(settings, load_registry().get("echo"), _Partial()):
        partial = await collect(settings, "cut", out, timeout_s=8, progress=False)
    assert (partial.done, partial.complete) == (6, False)

    # collect --timeout names every line still missing, and none that has its result.
    cli = _collect_cli(settings, "cut", tmp_path / "cli.jsonl", timeout_s=2)
    assert cli.returncode == 1, cli.stderr
    said = cli.stderr.strip().splitlines()[-1]
    assert said.startswith("timed out: 4 task(s) have no result yet")
    for i in range(10):
        assert (f"l{i:04d} (echo)" in said) == (i >= 6), said

    resumed = await submit(settings, job_file, job_id="cut", progress=False)
    assert resumed.note == "resumed an interrupted submission"
    assert resumed.published == 4
    bulk = Topics(settings.topic_prefix).bulk("echo")
    assert await count_records(settings, [bulk]) == 14  # 10, then the 4 without a result

    async with worker(settings, "echo"):
        done = await collect(settings, "cut", out, timeout_s=60, progress=False)
    assert done.complete and (done.done, done.failed) == (10, 0)
    assert sorted(line["custom_id"] for line in read_lines(out)) == [f"l{i:04d}" for i in range(10)]
    finished = await submit(settings, job_file, job_id="cut", progress=False)
    assert finished.published == 0 and "already submitted" in finished.note
