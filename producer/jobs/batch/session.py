"""The batch job model from Python and the CLI, without HTTP: submit, follow, collect.

An operator's tool: it reads and writes the same topics as the front ends, so a batch
submitted here is served over HTTP to the key that owns it, and a batch created over HTTP is
followed and collected here by id::

    async with opened(settings) as service:
        batch = await submit_batch(service, "requests.jsonl", content, key_id)
        report = await collect_batch(service, batch.id, Path("out.jsonl"), timeout_s=600)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from producer.jobs.batch.lines import parse_batch_file
from producer.jobs.batch.service import BatchService
from producer.jobs.batch.store import FileStore
from schemas.batch import TERMINAL, BatchCreate, BatchRecord, RequestCounts
from schemas.errors import BrokerUnavailable, NotFound, Refused
from schemas.kafka import ensure_topics
from schemas.registry import Registry, load_registry
from schemas.settings import Settings

_READY_WAIT_S = 60.0
_POLL_S = 0.2
_MISSING_SHOWN = 10
Progress = Callable[[RequestCounts], None]


@dataclass(frozen=True, slots=True)
class BatchReport:
    """Where a batch stands after a collect, and what is still missing."""

    batch: BatchRecord
    counts: RequestCounts
    written: int
    missing: list[str]

    @property
    def complete(self) -> bool:
        """The batch ended, so its output is whole."""
        return self.batch.status in TERMINAL


@asynccontextmanager
async def opened(
    settings: Settings, registry: Registry | None = None
) -> AsyncIterator[BatchService]:
    """A started batch service whose book has read every record up to now."""
    await ensure_topics(settings, [])
    service = BatchService(settings, registry or load_registry())
    await service.start()
    try:
        deadline = time.monotonic() + _READY_WAIT_S
        while not service.book.ready:
            if time.monotonic() > deadline:
                raise BrokerUnavailable(f"the batch records were not read in {_READY_WAIT_S} s")
            await asyncio.sleep(0.05)
        yield service
    finally:
        await service.stop()


def is_batch_file(path: Path) -> bool:
    """Whether a JSONL file is in OpenAI's batch format (its first line has ``url``)."""
    with path.open("rb") as f:
        for raw in f:
            if raw.strip():
                return b'"url"' in raw and b'"body"' in raw
    return False


def find(service: BatchService, batch_id: str) -> BatchRecord:
    """A batch of any key (the operator's view)."""
    batch = service.book.batches.get(batch_id)
    if batch is None:
        raise NotFound(f"no batch {batch_id!r} on the batches topic (kafka-completions jobs list)")
    return batch


async def submit_batch(
    service: BatchService, name: str, content: bytes, key_id: str
) -> BatchRecord:
    """Upload a batch file and create its batch (the endpoint of its lines), owned by ``key_id``."""
    record = await service.upload(key_id, name, "batch", content)
    first = parse_batch_file(content, service.registry, service.settings).lines[0]
    body = BatchCreate(input_file_id=record.id, endpoint=first.url, completion_window="24h")
    batch = await service.create(key_id, body)
    if batch.status == "failed" and batch.errors is not None:
        raise Refused("; ".join(f"line {e.line}: {e.message}" for e in batch.errors.data))
    return batch


async def follow(
    service: BatchService, batch_id: str, timeout_s: float | None, progress: Progress
) -> BatchRecord:
    """Wait until the batch ends or ``timeout_s`` passes; its record then."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        batch = find(service, batch_id)
        progress(service.counts(batch))
        if batch.status in TERMINAL or (deadline is not None and time.monotonic() > deadline):
            return batch
        await asyncio.sleep(_POLL_S)


async def collect_batch(
    service: BatchService,
    batch_id: str,
    out: Path,
    *,
    timeout_s: float | None = None,
    progress: Progress = lambda _: None,
) -> BatchReport:
    """Write the batch's output then error lines to ``out`` once it ends (or at the timeout)."""
    batch = await follow(service, batch_id, timeout_s, progress)
    written = 0
    with out.open("wb") as f:
        for kind in ("output", "errors"):
            view = batch.output if kind == "output" else batch.error_file
            if view is None:
                continue
            async for line in service.content(service.output_file(batch.key_id, view.id)):
                f.write(line)
                written += 1
    missing = [] if batch.status in TERMINAL else await _missing(service, batch)
    return BatchReport(batch, service.counts(batch), written, missing)


async def _missing(service: BatchService, batch: BatchRecord) -> list[str]:
    """Up to ten custom_ids of the batch with no outcome yet."""
    answered = service.book.answered(batch.id)
    source = service.book.files.get(batch.input_file_id)
    if source is None:
        return []
    content = await FileStore(service.settings, service.producer).read(source)
    ids = [
        line.custom_id
        for line in parse_batch_file(content, service.registry, service.settings).lines
    ]
    return [cid for cid in ids if cid not in answered][:_MISSING_SHOWN]
