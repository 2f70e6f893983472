"""The Batch API's operations on the job model: upload, read and delete files; create, read,
list and cancel batches. HTTP routes and the CLI call these; nothing here knows of FastAPI.

Uploading checks every line and keeps what it found in the file's record. Creating a batch
checks again only what can have changed since (the endpoint, the models configured), creates
the batch's results topic and writes the batch record, ``in_progress``: it publishes nothing,
so it costs the same for one line or 50,000. The dispatcher (``dispatch.py``) hands the lines
to the bulk lanes. A refused file makes a ``failed`` batch whose ``errors`` give each line's
number and reason. Objects belong to the API key (its key id) that created them: another key
is told they do not exist.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from producer.jobs.batch.book import BatchBook
from producer.jobs.batch.lines import BatchFile, most_tokens, parse_batch_file
from producer.jobs.batch.output import Kind, render
from producer.jobs.batch.store import FileStore
from schemas import clients, tracing
from schemas.batch import (
    TERMINAL,
    BatchCancel,
    BatchCreate,
    BatchErrorItem,
    BatchErrors,
    BatchRecord,
    FileRecord,
    RequestCounts,
)
from schemas.errors import BrokerUnavailable, Conflict, ModelError, NotFound, Refused
from schemas.kafka import batch_results_topic, ensure_topics
from schemas.registry import Registry
from schemas.settings import Settings
from schemas.topics import Topics
from schemas.wire import encode

_PROBLEMS_SHOWN = 50
# A key's quota: a batch's most cost from its most tokens per model, or a refusal (429).
Pricing = Callable[[dict[str, tuple[int, int]]], float]
_LINGER_MS = 20


@dataclass(frozen=True, slots=True)
class OutputView:
    """An output or error file of a batch, as ``GET /v1/files`` shows it."""

    batch: BatchRecord
    kind: Kind
    id: str
    bytes: int


class BatchService:
    """Files and batches of every API key, on Kafka."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self._topics = Topics(settings.topic_prefix)
        self._producer: AIOKafkaProducer | None = None
        self.book = BatchBook(settings, self._write)

    @property
    def producer(self) -> AIOKafkaProducer:
        """The started producer."""
        if self._producer is None:
            raise RuntimeError("BatchService.start() was not awaited")
        return self._producer

    async def start(self) -> None:
        """Connect and start the book (the topics exist: the front end created them)."""
        self._producer = clients.producer(
            self.settings, "kc-batches", linger_ms=_LINGER_MS, max_request_size=1024 * 1024
        )
        try:
            await self._producer.start()
        except KafkaError as exc:
            raise BrokerUnavailable(f"cannot reach Kafka: {exc!r}") from exc
        await self.book.start()

    async def stop(self) -> None:
        """Stop the book and flush the producer."""
        await self.book.stop()
        if self._producer is not None:
            await self._producer.stop()

    # Files

    async def upload(self, key_id: str, filename: str, purpose: str, content: bytes) -> FileRecord:
        """Validate and store an input file (``purpose`` must be ``batch``)."""
        if purpose != "batch":
            raise Refused(
                f"purpose: only 'batch' files are accepted here (got {purpose!r})", "purpose"
            )
        if len(content) > self.settings.batch_max_bytes:
            raise Refused(
                f"file: {len(content)} bytes; the limit is {self.settings.batch_max_bytes} "
                "(KC_BATCH_MAX_BYTES)",
                "file",
            )
        parsed = parse_batch_file(content, self.registry, self.settings)
        if parsed.problems:
            raise Refused(_problems_text(parsed), "file")
        record = FileRecord(
            id=f"file-{uuid.uuid4().hex}",
            key_id=key_id,
            filename=filename,
            purpose="batch",
            bytes=len(content),
            lines=len(parsed.lines),
            created_at=int(time.time()),
            endpoints=tuple(sorted({line.url for line in parsed.lines})),
            models=tuple(parsed.models),
            tasks=parsed.tasks,
            most_tokens=most_tokens(parsed.lines),
        )
        stored = await FileStore(self.settings, self.producer).put(record, content)
        self.book.files[stored.id] = stored
        return stored

    def input_file(self, key_id: str, file_id: str) -> FileRecord:
        """An uploaded file of this key."""
        record = self.book.files.get(file_id)
        if record is None or record.key_id != key_id:
            raise NotFound(f"no file {file_id!r} for this API key", "file_id")
        return record

    def output_file(self, key_id: str, file_id: str) -> OutputView:
        """An output or error file of one of this key's batches (until it expires)."""
        batch_id, _, kind = file_id.removeprefix("file-").rpartition("-")
        batch = self.book.batches.get(batch_id)
        if batch is None or batch.key_id != key_id or kind not in ("output", "errors"):
            raise NotFound(f"no file {file_id!r} for this API key", "file_id")
        out = batch.output if kind == "output" else batch.error_file
        if out is None or out.id != file_id or time.time() > batch.output_expires_at:
            raise NotFound(f"no file {file_id!r} for this API key (expired?)", "file_id")
        return OutputView(batch, "output" if kind == "output" else "errors", file_id, out.bytes)

    def files_of(self, key_id: str) -> list[FileRecord | OutputView]:
        """Every file of this key: uploads and live batch outputs, newest first."""
        mine: list[FileRecord | OutputView] = [
            f for f in self.book.files.values() if f.key_id == key_id
        ]
        for batch in self.book.batches.values():
            for out in (batch.output, batch.error_file):
                if batch.key_id == key_id and out is not None:
                    mine.append(self.output_file(key_id, out.id))
        return sorted(mine, key=_created, reverse=True)

    def file(self, key_id: str, file_id: str) -> FileRecord | OutputView:
        """An upload or a batch output of this key."""
        if file_id in self.book.files:
            return self.input_file(key_id, file_id)
        return self.output_file(key_id, file_id)

    async def content(self, file: FileRecord | OutputView) -> AsyncIterator[bytes]:
        """The bytes of a file, in pieces: an upload's chunks, or a batch output rendered."""
        if isinstance(file, FileRecord):
            yield await FileStore(self.settings, self.producer).read(file)
            return
        async for line in render(self.settings, file.batch, file.kind):
            yield line

    async def delete_file(self, key_id: str, file_id: str) -> None:
        """Delete an uploaded file, unless a running batch has lines of it still to hand out."""
        record = self.input_file(key_id, file_id)
        for batch in self.book.batches.values():
            waiting = self.book.waiting(batch) if batch.input_file_id == file_id else 0
            if waiting:
                raise Conflict(
                    f"batch {batch.id} has {waiting} line(s) of {file_id} "
                    "still to hand out; delete the file once it ends, or cancel it"
                )
        await FileStore(self.settings, self.producer).delete(record)
        self.book.files.pop(file_id, None)

    # Batches

    def batch(self, key_id: str, batch_id: str) -> BatchRecord:
        """A batch of this key."""
        record = self.book.batches.get(batch_id)
        if record is None or record.key_id != key_id:
            raise NotFound(f"no batch {batch_id!r} for this API key", "batch_id")
        return record

    def counts(self, batch: BatchRecord) -> RequestCounts:
        """Its request counts, live."""
        return self.book.counts(batch)

    def batches_of(self, key_id: str) -> list[BatchRecord]:
        """This key's batches, newest first."""
        mine = [b for b in self.book.batches.values() if b.key_id == key_id]
        return sorted(mine, key=lambda b: (b.created_at, b.id), reverse=True)

    async def create(
        self,
        key_id: str,
        body: BatchCreate,
        window_s: float | None = None,
        price: Pricing | None = None,
    ) -> BatchRecord:
        """Check the input file against the endpoint and start the batch (``in_progress``);
        the dispatcher hands its lines out (``producer/jobs/batch/dispatch.py``).

        The lines were checked at upload, and the file's record keeps what that found: its
        endpoints and models. Here only what can have changed since is checked again: that
        every line is for this endpoint, and every model is still configured (the registry or
        a vendor key may have changed). Only when that fails is the file read and checked line
        by line again, so the refusal names each line. ``window_s`` (``submit --deadline-s``)
        replaces ``KC_BATCH_WINDOW_S`` as the window. ``price`` (the key's quota) gives the
        batch's most cost from its lines' most tokens, or refuses it.
        """
        source = self.input_file(key_id, body.input_file_id)
        clock = time.time()
        now = int(clock)
        window = window_s or self.settings.batch_window_s
        record = BatchRecord(
            id=f"batch_{uuid.uuid4().hex}",
            key_id=key_id,
            input_file_id=source.id,
            endpoint=body.endpoint,
            completion_window=body.completion_window if window_s is None else f"{window_s:g}s",
            status="in_progress",
            created_at=now,
            in_progress_at=now,
            expires_at=math.ceil(clock + window),
            output_expires_after_s=(
                body.output_expires_after.seconds
                if body.output_expires_after
                else self.settings.batch_output_expires_s
            ),
            total=source.lines,
            tasks=source.tasks,
            models=source.models,
            metadata=body.metadata,
            metered=True,
        )
        if not self._still_valid(source, body.endpoint):
            content = await FileStore(self.settings, self.producer).read(source)
            parsed = parse_batch_file(content, self.registry, self.settings, body.endpoint)
            if parsed.problems:
                return await self._refuse(record, parsed)
            record = record.moved(
                total=len(parsed.lines), tasks=parsed.tasks, models=tuple(parsed.models)
            )
            source = source.model_copy(update={"most_tokens": most_tokens(parsed.lines)})
        if price is not None:
            record = record.moved(max_cost=price(await self._most_tokens(source)))
        span = _batch_span(record) if self.settings.tracing else None
        try:
            retention = record.output_expires_after_s + math.ceil(window)
            topic = batch_results_topic(self.settings, record.id, retention)
            await ensure_topics(self.settings, record.models, [topic], settle_all=False)
            if span is not None:
                record = record.moved(traceparent=tracing.traceparent_of(span))
            await self._write(record)
        finally:
            if span is not None:
                span.end()
        return record

    async def _most_tokens(self, source: FileRecord) -> dict[str, tuple[int, int]]:
        """A file's most tokens per model (read again for a file stored before uploads kept
        them)."""
        if source.most_tokens or not source.lines:
            return source.most_tokens
        content = await FileStore(self.settings, self.producer).read(source)
        return most_tokens(parse_batch_file(content, self.registry, self.settings).lines)

    def _still_valid(self, source: FileRecord, endpoint: str) -> bool:
        """Whether the upload's check still holds for a batch of ``endpoint``."""
        if source.endpoints != (endpoint,) or not source.models:
            return False  # another endpoint, or a file stored before uploads kept this
        for name in source.models:
            try:
                spec = self.registry.get(name)
            except ModelError:
                return False
            if spec.unavailable_reason(self.settings) is not None:
                return False
        return True

    async def cancel(self, key_id: str, batch_id: str) -> BatchRecord:
        """Cancel a batch: tasks not yet started are skipped by the workers."""
        record = self.batch(key_id, batch_id)
        if record.status in ("cancelling", "cancelled"):
            return record
        if record.status in TERMINAL:
            raise Conflict(
                f"batch {batch_id} is {record.status}; only a running batch can be cancelled"
            )
        cancel = BatchCancel(batch_id=batch_id, at=time.time())
        try:
            await self.producer.send_and_wait(
                self._topics.batch_cancels, encode(cancel), batch_id.encode()
            )
        except KafkaError as exc:
            raise BrokerUnavailable(f"Kafka did not take the cancellation: {exc!r}") from exc
        cancelling = record.moved(status="cancelling", cancelling_at=int(cancel.at))
        await self._write(cancelling)
        return cancelling

    async def _refuse(self, record: BatchRecord, parsed: BatchFile) -> BatchRecord:
        items = [
            BatchErrorItem(code="invalid_request", message=p.reason, line=p.number)
            for p in parsed.problems[:_PROBLEMS_SHOWN]
        ]
        failed = record.moved(
            status="failed",
            in_progress_at=None,
            total=len(parsed.lines) + len(parsed.problems),
            failed_at=record.created_at,
            errors=BatchErrors(data=items),
            counts=RequestCounts(total=record.total),
        )
        await self._write(failed)
        return failed

    async def _write(self, record: BatchRecord) -> None:
        try:
            await self.producer.send_and_wait(
                self._topics.batches, encode(record), record.id.encode()
            )
        except KafkaError as exc:
            raise BrokerUnavailable(
                f"Kafka did not take the state of {record.id}: {exc!r}"
            ) from exc
        self.book.apply(record)


def _batch_span(record: BatchRecord) -> tracing.Span:
    """The span of a batch's creation, in the trace of the request that created it."""
    attributes: tracing.Attributes = {"kc.batch_id": record.id, "kc.batch_lines": record.total}
    return tracing.tracer().start_span("create batch", attributes=attributes)


def _problems_text(parsed: BatchFile) -> str:
    shown = "; ".join(str(p) for p in parsed.problems[:_PROBLEMS_SHOWN])
    more = len(parsed.problems) - _PROBLEMS_SHOWN
    tail = f"; and {more} more" if more > 0 else ""
    return f"the file has {len(parsed.problems)} invalid line(s): {shown}{tail}"


def _created(item: FileRecord | OutputView) -> int:
    if isinstance(item, FileRecord):
        return item.created_at
    return item.batch.finalizing_at or item.batch.created_at
