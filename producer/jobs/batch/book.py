"""The batch book: every file and batch record, and the live progress of running batches.

One book per front-end instance (the materialiser). A single consumer without a group reads
the compacted files and batches topics from their beginning, then follows them, and reads the
results topic of each running batch (one partition per batch) from its start. So
``GET /v1/batches/{id}`` is a dictionary lookup whatever the topics retain, and starting an
instance costs one pass over the records of the batches still running.

The fold of a running batch sizes its output and error files as lines are answered. When
every line has an outcome (or its window has passed), the book writes the final record:
``completed`` (``cancelled`` for a cancelling batch, ``expired`` when lines met the window's
end) with the counts and the output files' sizes.
Every instance may write it; the timestamps come from the results' record times, so the
records they write agree. Records never move a batch backwards (a terminal batch stays so).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from producer.jobs.batch.output import Kind, LineFold
from schemas import clients
from schemas.batch import (
    TERMINAL,
    BatchRecord,
    DispatchCursor,
    FileRecord,
    OutputFile,
    RequestCounts,
)
from schemas.errors import WireError
from schemas.kafka import Record
from schemas.settings import Settings
from schemas.topics import Topics
from schemas.wire import decode_result

log = logging.getLogger(__name__)
Writer = Callable[[BatchRecord], Awaitable[None]]
_RANK = {"validating": 0, "in_progress": 1, "cancelling": 2, "finalizing": 3}
_FILE_FIELDS: tuple[tuple[str, Kind], ...] = (("output", "output"), ("error_file", "errors"))
_POLL_MS = 200
# Past its window a batch waits this long for the workers to skip what is left (each such
# line then has its batch_expired error); with no worker at all it ends without them.
_EXPIRY_GRACE_S = 60.0
_RETRY_S = 1.0


def output_id(batch_id: str, kind: str) -> str:
    """The id of a batch's output (``output``) or error (``errors``) file."""
    return f"file-{batch_id}-{kind}"


class BatchBook:
    """Files and batches as the topics say, kept current by one background reader."""

    def __init__(self, settings: Settings, write: Writer) -> None:
        self._settings = settings
        self._topics = Topics(settings.topic_prefix)
        self._write = write
        self.files: dict[str, FileRecord] = {}
        self.batches: dict[str, BatchRecord] = {}
        self.cursors: dict[str, DispatchCursor] = {}
        self._folds: dict[str, LineFold] = {}
        self._positions: dict[TopicPartition, int] = {}
        self._finishing: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._meta = [
            TopicPartition(self._topics.files, 0),
            TopicPartition(self._topics.batches, 0),
            TopicPartition(self._topics.dispatch, 0),
        ]
        self._ends: dict[TopicPartition, int] = {}
        self.ready = False
        self._runs_pending = True  # the running batches' ends are taken once the rest is read
        self._consumer: AIOKafkaConsumer | None = None
        self._loop_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect and start reading (``ready`` once the records up to now are read)."""
        consumer = clients.consumer(
            self._settings, "kc-batch-book", committed_only=True, auto_offset_reset="earliest"
        )
        await consumer.start()
        self._consumer = consumer
        self._ends = await consumer.end_offsets(self._meta)
        for tp in self._meta:
            self._positions[tp] = 0
        self._loop_task = asyncio.create_task(self._run(consumer), name="kc-batch-book")

    async def stop(self) -> None:
        """Stop reading and disconnect."""
        for task in [self._loop_task, *self._tasks]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._consumer is not None:
            await self._consumer.stop()

    def counts(self, batch: BatchRecord) -> RequestCounts:
        """The batch's request counts: final once it ended, live while it runs."""
        if batch.counts is not None:
            return batch.counts
        fold = self._folds.get(batch.id)
        return fold.counts if fold is not None else RequestCounts(total=batch.total)

    def outcomes(self, batch: BatchRecord) -> int:
        """How many of its lines have an outcome (a line in the output or the error file)."""
        if batch.status in TERMINAL:
            return sum(f.lines for f in (batch.output, batch.error_file) if f is not None)
        fold = self._folds.get(batch.id)
        return fold.answered if fold is not None else 0

    def waiting(self, batch: BatchRecord) -> int:
        """Lines of a running batch the dispatcher has not handed out yet (as far as this book
        has read its cursor); 0 once it ended, and for a batch published whole at creation."""
        if batch.status in TERMINAL or not batch.metered:
            return 0
        cursor = self.cursors.get(batch.id)
        return max(0, batch.total - (cursor.next_line if cursor is not None else 0))

    def fold(self, batch_id: str) -> LineFold | None:
        """The live fold of a running batch (None once it ended)."""
        return self._folds.get(batch_id)

    def answered(self, batch_id: str) -> set[str]:
        """The custom_ids of a running batch that have an outcome."""
        fold = self._folds.get(batch_id)
        return set(fold.done) if fold is not None else set()

    def apply(self, record: BatchRecord) -> None:
        """Take a batch record (read back, or just written by this instance)."""
        held = self.batches.get(record.id)
        if held is not None and _rank(record) < _rank(held):
            return
        self.batches[record.id] = record
        if record.status in TERMINAL:
            self._folds.pop(record.id, None)
        elif record.status in ("in_progress", "cancelling") and record.id not in self._folds:
            self._folds[record.id] = LineFold(record.total, record.endpoint)

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        assigned: set[TopicPartition] = set()
        while True:
            wanted = set(self._meta) | {
                TopicPartition(self._topics.batch_results(b), 0) for b in self._folds
            }
            try:
                if wanted != assigned:
                    self._assign(consumer, wanted)
                    assigned = wanted
                # Short polls until caught up: a CLI command waits for ``ready``.
                batch = await consumer.getmany(timeout_ms=_POLL_MS if self.ready else 20)
            except KafkaError as exc:
                log.warning("batch book: %r; retrying", exc)
                assigned = set()
                await asyncio.sleep(_RETRY_S)
                continue
            for tp, records in batch.items():
                for record in records:
                    self._handle(tp, record)
                    self._positions[tp] = record.offset + 1
            if not self.ready:
                self.ready = await self._caught_up(consumer, assigned)
            self._finish_due()

    async def _caught_up(self, consumer: AIOKafkaConsumer, assigned: set[TopicPartition]) -> bool:
        """Whether what was there at start-up is read: files and batches, then the results of
        the batches they show running (so a restarted instance's counts are right at once)."""
        for tp, end in self._ends.items():
            if tp in assigned and await consumer.position(tp) < end:
                return False
        if not self._runs_pending:
            return True
        runs = {TopicPartition(self._topics.batch_results(b), 0) for b in self._folds}
        if not runs <= assigned:
            return False  # they are assigned on the next turn of the loop
        self._ends |= await consumer.end_offsets(sorted(runs))
        self._runs_pending = False
        return False

    def _assign(self, consumer: AIOKafkaConsumer, wanted: set[TopicPartition]) -> None:
        consumer.assign(sorted(wanted))
        for tp in wanted:
            consumer.seek(tp, self._positions.setdefault(tp, 0))

    def _handle(self, tp: TopicPartition, record: Record) -> None:
        if tp.topic == self._topics.files:
            self._file(record)
        elif tp.topic == self._topics.dispatch:
            try:
                cursor = DispatchCursor.model_validate_json(record.value or b"")
                self.cursors[cursor.batch_id] = cursor
            except ValidationError:
                log.warning("ignoring a record on %s at %d", tp.topic, record.offset)
        elif tp.topic == self._topics.batches:
            try:
                self.apply(BatchRecord.model_validate_json(record.value or b""))
            except ValidationError:
                log.warning("ignoring a record on %s at %d", tp.topic, record.offset)
        else:
            batch_id = tp.topic.removeprefix(self._topics.batch_results(""))
            fold = self._folds.get(batch_id)
            if fold is None:
                return
            try:
                fold.add(decode_result(record.value), record.timestamp)
            except WireError as exc:
                log.warning("ignoring a record on %s: %s", tp.topic, exc)

    def _file(self, record: Record) -> None:
        key = (record.key or b"").decode()
        if record.value is None:
            self.files.pop(key, None)
            return
        try:
            self.files[key] = FileRecord.model_validate_json(record.value)
        except ValidationError:
            log.warning("ignoring a record on the files topic at %d", record.offset)

    def _finish_due(self) -> None:
        now = time.time()
        for batch_id, fold in list(self._folds.items()):
            batch = self.batches[batch_id]
            due = fold.answered >= fold.total or now > batch.expires_at + _EXPIRY_GRACE_S
            if due and batch_id not in self._finishing:
                self._finishing.add(batch_id)
                task = asyncio.create_task(self._finish(batch))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _finish(self, batch: BatchRecord) -> None:
        try:
            fold = self._folds[batch.id]
            sizes = fold.sizes
            end = fold.last_ms // 1000 if fold.last_ms else int(time.time())
            if batch.status == "cancelling":
                status, stamps = "cancelled", {"cancelled_at": end}
            elif fold.expired or fold.answered < fold.total:
                status, stamps = "expired", {"expired_at": batch.expires_at}
            else:
                status, stamps = "completed", {"completed_at": end}
            files = {
                field: OutputFile(id=output_id(batch.id, kind), bytes=sizes[kind][0], lines=lines)
                for field, kind in _FILE_FIELDS
                if (lines := sizes[kind][1])
            }
            final = batch.moved(
                status=status, finalizing_at=end, counts=fold.counts, **stamps, **files
            )
            await self._write(final)
            self.apply(final)
        except Exception:  # a failed finish is retried on the next poll, never lost
            log.exception("finishing batch %s failed; retrying", batch.id)
            await asyncio.sleep(_RETRY_S)
        finally:
            self._finishing.discard(batch.id)


def _rank(record: BatchRecord) -> int:
    return 4 if record.status in TERMINAL else _RANK[record.status]
