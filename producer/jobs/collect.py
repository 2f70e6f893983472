"""Collecting a job: wait for its batch to end, then write one line per custom_id.

``collect`` follows the job in the batch book (a progress bar of completed and failed lines)
until its newest batch ends or ``--timeout`` passes, then writes the lines answered so far,
batch by batch, oldest first, in OpenAI's batch output format: a retry's answer replaces the
failure it retried. It first reads the output file it writes to: a custom_id already written
with the same line is not written again, and a line whose outcome changed is replaced by
rewriting the file atomically when the run ends. A torn last line (a run killed mid-write) is
dropped and written again.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tqdm import tqdm  # type: ignore[import-untyped]

from producer.jobs.batch.lines import parse_batch_file
from producer.jobs.batch.output import answered_lines
from producer.jobs.batch.service import BatchService
from producer.jobs.batch.session import opened
from producer.jobs.batch.store import FileStore
from producer.jobs.job import Job, find_job
from producer.jobs.jobfile import JobError
from schemas.registry import Registry
from schemas.settings import Settings

_POLL_S = 0.2
_MISSING_SHOWN = 10
Progress = Callable[[Job], None]


@dataclass(frozen=True, slots=True)
class CollectReport:
    """Where the job stood when collect wrote it, and what is still missing."""

    job: Job
    written: int
    replaced: int
    missing: list[str]

    @property
    def complete(self) -> bool:
        """The job's newest batch ended, so the output holds every outcome there will be."""
        return self.job.ended


async def collect(
    settings: Settings,
    job_id: str,
    out: Path,
    *,
    timeout_s: float | None = None,
    progress: bool = True,
    registry: Registry | None = None,
) -> CollectReport:
    """Write one line per custom_id of a job (or batch) to ``out``, resuming what is there."""
    output = OutputFile(out)
    bar = tqdm(unit="line", desc=job_id, disable=not progress)

    def show(job: Job) -> None:
        bar.total = job.lines
        bar.n = job.completed + job.failed
        bar.set_postfix(completed=job.completed, failed=job.failed)

    try:
        async with opened(settings, registry) as service:
            job = await follow(service, job_id, timeout_s, show)
            for batch in job.batches:
                async for _, line in answered_lines(settings, batch):
                    output.put(line.decode().rstrip("\n"))
            missing = [] if job.ended else await missing_ids(service, job)
    finally:
        bar.close()
        output.close()
    return CollectReport(job, output.appended, output.replaced, missing)


async def follow(
    service: BatchService, job_id: str, timeout_s: float | None, progress: Progress
) -> Job:
    """Wait until the job's newest batch ends or ``timeout_s`` passes; the job then."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        job = find_job(service.book, job_id)
        progress(job)
        if job.ended or (deadline is not None and time.monotonic() > deadline):
            return job
        await asyncio.sleep(_POLL_S)


async def missing_ids(service: BatchService, job: Job, limit: int = _MISSING_SHOWN) -> list[str]:
    """Up to ``limit`` custom_ids of the job's newest batch with no outcome yet."""
    answered = service.book.answered(job.latest.id)
    source = service.book.files.get(job.latest.input_file_id)
    if source is None:
        return []
    content = await FileStore(service.settings, service.producer).read(source)
    lines = parse_batch_file(content, service.registry, service.settings).lines
    return [line.custom_id for line in lines if line.custom_id not in answered][:limit]


class OutputFile:
    """A JSONL output file appended to by custom_id, never holding two lines for one."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self.lines = read_output(path)
        self.appended = 0
        self.replaced = 0
        self._file: IO[str] = path.open("a", encoding="utf-8")

    def put(self, text: str) -> None:
        """Write the line of a custom_id, unless the file already holds exactly it."""
        custom_id = json.loads(text)["custom_id"]
        held = self.lines.get(custom_id)
        if held == text:
            return
        self.lines[custom_id] = text
        if held is None:
            self._file.write(text + "\n")
            self.appended += 1
        else:
            self.replaced += 1

    def close(self) -> None:
        """Close, rewriting the file (atomically) when a line was replaced."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        if self.replaced:
            _write_atomically(self._path, self.lines.values())


def read_output(path: Path) -> dict[str, str]:
    """The lines of an existing output file by custom_id (a torn last line is dropped)."""
    if not path.exists():
        return {}
    data = path.read_text(encoding="utf-8")
    lines: dict[str, str] = {}
    complete, _, torn = data.rpartition("\n")
    for number, text in enumerate(complete.splitlines(), start=1):
        if not text.strip():
            continue
        try:
            lines[json.loads(text)["custom_id"]] = text
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise JobError(
                f"{path}:{number} is not a collect output line ({exc}); "
                "collect into a new file or remove that line"
            ) from exc
    if torn:
        _write_atomically(path, lines.values())
    return lines


def _write_atomically(path: Path, lines: Iterable[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.writelines(f"{text}\n" for text in lines)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
