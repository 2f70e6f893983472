"""Collecting a job's results: an iterator for notebooks, and ``collect`` into a JSONL file.

Both read the results topic from the beginning (read_committed, no consumer group) and keep
the records of one job, so a rerun sees everything the last run saw. ``collect`` first reads
the output file it appends to: a (custom_id, model) already written with the same line is not
written again; a line whose outcome changed (a failed task answered after ``--retry-failed``)
is replaced when the run ends, by rewriting the file atomically. A torn last line (a run
killed mid-write) is dropped and written again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tqdm import tqdm  # type: ignore[import-untyped]

from producer.jobs.jobfile import JobError
from producer.jobs.manifest import JobManifest, read_manifests
from producer.jobs.scan import job_needle, scan
from producer.jobs.tally import JobTally, Key, OutputLine
from schemas.settings import Settings
from schemas.topics import Topics
from schemas.wire import decode_result, decode_task

_MISSING_SHOWN = 10


@dataclass(frozen=True, slots=True)
class CollectReport:
    """What a collect run did, and what is still missing."""

    job_id: str
    tasks: int
    done: int
    failed: int
    tokens: int
    written: int
    replaced: int
    missing: list[Key]

    @property
    def complete(self) -> bool:
        """Every task of the job has a line in the output."""
        return self.done + self.failed >= self.tasks


async def manifest_of(settings: Settings, job_id: str) -> JobManifest:
    """The manifest of a job, or JobError when there is none."""
    manifest = (await read_manifests(settings)).get(job_id)
    if manifest is None:
        raise JobError(f"no job {job_id!r} on the jobs topic (kafka-completions jobs list)")
    return manifest


async def follow_job(
    settings: Settings, manifest: JobManifest, tally: JobTally, timeout_s: float | None
) -> AsyncGenerator[list[OutputLine], None]:
    """Batches of newly counted outcomes until every task has one or ``timeout_s`` passes."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    topic = Topics(settings.topic_prefix).results
    needle = job_needle(manifest.job_id)
    async with aclosing(scan(settings, [topic], needle=needle, follow=True)) as batches:
        async for batch in batches:
            changed = []
            for record in batch:
                result = decode_result(record.value)
                if result.job_id == manifest.job_id and tally.add(result, record.timestamp):
                    changed.append(OutputLine.of(result))
            yield changed
            if tally.pending == 0 or (deadline is not None and time.monotonic() > deadline):
                return


async def iter_results(
    settings: Settings, job_id: str, *, timeout_s: float | None = None
) -> AsyncIterator[OutputLine]:
    """Each (custom_id, model) outcome of a job once, as it arrives (the notebook API)."""
    manifest = await manifest_of(settings, job_id)
    tally = JobTally(manifest.tasks, manifest.retry_cutoff_ms)
    async with aclosing(follow_job(settings, manifest, tally, timeout_s)) as batches:
        async for batch in batches:
            for line in batch:
                yield line


async def collect(
    settings: Settings,
    job_id: str,
    out: Path,
    *,
    timeout_s: float | None = None,
    progress: bool = True,
) -> CollectReport:
    """Write one line per (custom_id, model) of a job to ``out``, resuming what is there."""
    manifest = await manifest_of(settings, job_id)
    tally = JobTally(manifest.tasks, manifest.retry_cutoff_ms)
    output = OutputFile(out)
    bar = tqdm(total=manifest.tasks, unit="task", desc=job_id, disable=not progress)
    try:
        async with aclosing(follow_job(settings, manifest, tally, timeout_s)) as batches:
            async for batch in batches:
                for line in batch:
                    output.put(line)
                output.flush()
                bar.n = tally.done + tally.failed
                bar.set_postfix(done=tally.done, failed=tally.failed, tokens=tally.tokens)
    finally:
        bar.close()
        output.close()
    missing = [] if tally.pending == 0 else await missing_keys(settings, manifest, tally)
    return CollectReport(
        job_id=job_id,
        tasks=manifest.tasks,
        done=tally.done,
        failed=tally.failed,
        tokens=tally.tokens,
        written=output.appended,
        replaced=output.replaced,
        missing=missing,
    )


async def missing_keys(
    settings: Settings, manifest: JobManifest, tally: JobTally, limit: int = _MISSING_SHOWN
) -> list[Key]:
    """Up to ``limit`` (custom_id, model) of the job with no counted outcome, from its tasks."""
    topics = Topics(settings.topic_prefix)
    missing: dict[Key, None] = {}
    bulk = [topics.bulk(m) for m in sorted(manifest.models)]
    needle = job_needle(manifest.job_id)
    async with aclosing(scan(settings, bulk, needle=needle)) as batches:
        async for batch in batches:
            for record in batch:
                task = decode_task(record.value)
                key = (task.custom_id or "", task.model)
                if task.job_id == manifest.job_id and key not in tally.final:
                    missing[key] = None
            if len(missing) >= limit:
                break
    return list(missing)[:limit]


class OutputFile:
    """A JSONL output file appended to by key, never holding two lines for one key."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self.lines = read_output(path)
        self.appended = 0
        self.replaced = 0
        self._file: IO[str] = path.open("a", encoding="utf-8")

    def put(self, line: OutputLine) -> None:
        """Write the line of a key, unless the file already holds exactly it."""
        text = line.dumps()
        held = self.lines.get(line.key)
        if held == text:
            return
        self.lines[line.key] = text
        if held is None:
            self._file.write(text + "\n")
            self.appended += 1
        else:
            self.replaced += 1

    def flush(self) -> None:
        """Make what was appended durable before the next batch is read."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        """Close, rewriting the file (atomically) when a line was replaced."""
        self._file.close()
        if self.replaced:
            _write_atomically(self._path, self.lines.values())


def read_output(path: Path) -> dict[Key, str]:
    """The lines of an existing output file by key (a torn last line is dropped from it)."""
    if not path.exists():
        return {}
    data = path.read_text(encoding="utf-8")
    lines: dict[Key, str] = {}
    complete, _, torn = data.rpartition("\n")
    for number, text in enumerate(complete.splitlines(), start=1):
        if not text.strip():
            continue
        try:
            body = json.loads(text)
            lines[(body["custom_id"], body["model"])] = text
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
