"""The accountant: the usage ledger's one writer, counting every committed result exactly once.

One front end at a time counts (``producer.election``: the member of the usage group that owns
the usage topic's one partition). It reads the committed results (``read_committed``) of the
results topic and of every batch's results topic, adds each to its minute's bucket
(``schemas.usage``), and commits the buckets it changed together with its cursor (the next
offset of every partition it read) in one Kafka transaction under a transactional id shared by
every front end. So:

- a result is counted once it is committed, and only then: a task a dead worker left
  uncommitted is counted when its rerun commits, once;
- a front end that dies mid-count leaves an open transaction, which the next writer's fencing
  aborts; the next writer reads the buckets and cursor that were committed and goes on from
  there: nothing is lost, nothing is counted twice.

Each bucket record carries the bucket's whole totals, so the compacted topic keeps one record
per bucket and every front end's ``UsageBook`` reads the ledger whole at start-up.
"""

from __future__ import annotations

import contextlib
import logging
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from producer.election import Election
from producer.jobs.batch.reader import scan
from producer.tenants.quota import KeyRecords
from schemas import clients
from schemas.errors import WireError
from schemas.kafka import Record
from schemas.metrics import FrontendMetrics
from schemas.registry import Registry
from schemas.settings import Settings
from schemas.topics import Topics
from schemas.usage import CURSOR_KEY, UsageBucket, UsageCursor, minute_of
from schemas.wire import ResultMessage, decode_result

log = logging.getLogger(__name__)
_TICK_S = 0.1
_MOST_PER_TURN = 5000  # results counted in one transaction
_SOURCES_EVERY_S = 1.0  # how often new batch results topics are looked for
KEY_LABELS = 100  # per-key usage series: the first keys counted; later ones as "other"


def bucket_of(result: ResultMessage, at: float) -> UsageBucket:
    """The empty bucket a result committed at ``at`` (epoch seconds) is counted in: its key's,
    its model's, batch (a line of a batch or job) or not, its minute."""
    return UsageBucket(
        key_id=result.key_id or "",
        model=result.model,
        batch=result.job_id is not None,
        start=minute_of(at),
    )


def tally(bucket: UsageBucket, result: ResultMessage, registry: Registry) -> UsageBucket:
    """``bucket`` with ``result`` counted.

    A result is one model request once per prompt (the first of its ``n`` choices), with the
    prompt's tokens; every choice adds its completion tokens; a failure adds no tokens.
    """
    head = result.choice_index % (result.choices_per_prompt or 1) == 0
    choice = result.choice
    prompt = choice.prompt_tokens if choice is not None and head else 0
    completion = choice.completion_tokens if choice is not None else 0
    spec = registry.get(result.model) if result.model in registry else None
    input_price = spec.input_cost_per_token if spec is not None else 0.0
    output_price = spec.output_cost_per_token if spec is not None else 0.0
    return bucket.model_copy(
        update={
            "requests": bucket.requests + int(head),
            "failed": bucket.failed + int(head and result.error is not None),
            "input_tokens": bucket.input_tokens + prompt,
            "output_tokens": bucket.output_tokens + completion,
            "input_cost": bucket.input_cost + prompt * input_price,
            "output_cost": bucket.output_cost + completion * output_price,
        }
    )


class Accountant:
    """The ledger's writer loop of one front end: idle unless it wins the usage election."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        metrics: FrontendMetrics | None = None,
        keys: KeyRecords | None = None,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._metrics = metrics
        self._keys = keys
        self._topics = Topics(settings.topic_prefix)
        # Idle, it polls a tick; leading, a turn's read waits for results instead.
        topics = self._topics
        self._election = Election(
            settings, "kc-usage", topics.usage_group, topics.usage, self, _TICK_S, 0.0
        )
        self._producer: AIOKafkaProducer | None = None
        self._reader: AIOKafkaConsumer | None = None
        self._buckets: dict[bytes, UsageBucket] = {}
        self._offsets: dict[TopicPartition, int] = {}
        self._sources_at = 0.0
        self._labels: set[str] = set()

    @property
    def leading(self) -> bool:
        """Whether this front end writes the ledger now."""
        return self._election.leading

    @property
    def holding(self) -> bool:
        """Whether it holds the leader's producer (it took over and has not stepped down)."""
        return self._producer is not None

    async def start(self) -> None:
        """Join the usage group and start the loop."""
        await self._election.start()

    async def stop(self) -> None:
        """Leave the group (another front end takes over) and stop."""
        await self._election.stop()

    async def take_over(self) -> None:
        """Fence the last writer, then read the buckets and cursor it committed."""
        producer = clients.transactional_producer(
            self._settings, "kc-ledger", self._topics.usage_transaction, linger_ms=5
        )
        reader = clients.consumer(
            self._settings, "kc-ledger-reader", committed_only=True, auto_offset_reset="earliest"
        )
        try:
            await producer.start()  # init_transactions: the last writer's open one aborts
            buckets, cursor = await _read_ledger(self._settings, self._topics.usage)
            await reader.start()
        except BaseException:
            await producer.stop()
            await reader.stop()
            raise
        self._producer, self._reader = producer, reader
        self._buckets = buckets
        self._offsets = {_partition(name): offset for name, offset in cursor.offsets.items()}
        self._sources_at = 0.0
        # Worth a line when it takes over a ledger; a first start's empty one is not news.
        level = logging.INFO if buckets else logging.DEBUG
        log.log(level, "usage: this front end writes the ledger (%d buckets)", len(buckets))

    async def step_down(self) -> None:
        producer, self._producer = self._producer, None
        reader, self._reader = self._reader, None
        for client in (producer, reader):
            if client is not None:
                with contextlib.suppress(KafkaError):
                    await client.stop()

    async def turn(self) -> None:
        reader = self._reader
        assert reader is not None
        if time.monotonic() - self._sources_at > _SOURCES_EVERY_S:
            await self._follow_sources(reader)
        fetched = await reader.getmany(timeout_ms=int(_TICK_S * 1000), max_records=_MOST_PER_TURN)
        changed: dict[bytes, UsageBucket] = {}
        for records in fetched.values():
            for record in records:
                self._count(record, changed)
        # Positions, not the last records' offsets: a transaction's commit marker (and an
        # aborted transaction's records) take offsets too, and the cursor passes them.
        offsets = {tp: await reader.position(tp) for tp in reader.assignment()}
        if not changed and offsets == self._offsets:
            return
        await self._commit(changed, offsets)
        self._show(changed)
        self._buckets.update(changed)
        self._offsets = offsets

    def _count(self, record: Record, changed: dict[bytes, UsageBucket]) -> None:
        try:
            result = decode_result(record.value)
        except WireError:
            return  # not a result: the front ends and the DLQ speak of it, not the ledger
        empty = bucket_of(result, record.timestamp / 1000)
        key = empty.record_key
        held = changed.get(key) or self._buckets.get(key) or empty
        changed[key] = tally(held, result, self._registry)

    async def _commit(
        self, changed: dict[bytes, UsageBucket], offsets: dict[TopicPartition, int]
    ) -> None:
        producer = self._producer
        assert producer is not None
        cursor = UsageCursor(offsets={f"{tp.topic}:{tp.partition}": n for tp, n in offsets.items()})
        async with producer.transaction():
            sends = [
                await producer.send(self._topics.usage, b.model_dump_json().encode(), key)
                for key, b in changed.items()
            ]
            sends.append(
                await producer.send(
                    self._topics.usage, cursor.model_dump_json().encode(), CURSOR_KEY
                )
            )
            await clients.delivered(sends)

    async def _follow_sources(self, reader: AIOKafkaConsumer) -> None:
        """Read the results topic and every batch results topic there is (from the cursor;
        a partition never counted before from its beginning)."""
        self._sources_at = time.monotonic()
        assert self._producer is not None
        names = {self._topics.results} | {
            t for t in await reader.topics() if self._topics.is_batch_results(t)
        }
        wanted: set[TopicPartition] = set()
        for name in names:
            # The producer's metadata: the consumer's listing of every topic does not keep
            # their partitions.
            for partition in await self._producer.partitions_for(name):
                wanted.add(TopicPartition(name, partition))
        if wanted == reader.assignment():
            return
        reader.assign(sorted(wanted))
        for tp in wanted:
            if tp in self._offsets:
                reader.seek(tp, self._offsets[tp])
            else:
                await reader.seek_to_beginning(tp)
        # A deleted batch topic leaves the cursor with the partitions that are gone.
        self._offsets = {tp: n for tp, n in self._offsets.items() if tp in wanted}

    def _show(self, changed: dict[bytes, UsageBucket]) -> None:
        if self._metrics is None:
            return
        for key, bucket in changed.items():
            before = self._buckets.get(key)
            label = self._label(bucket.key_id)
            tokens = self._metrics.usage_tokens
            requests = self._metrics.usage_requests
            for kind, now, then in (
                ("input", bucket.input_tokens, before.input_tokens if before else 0),
                ("output", bucket.output_tokens, before.output_tokens if before else 0),
            ):
                if now > then:
                    tokens.labels(label, bucket.model, kind).inc(now - then)
            ok = (
                bucket.requests - bucket.failed - (before.requests - before.failed if before else 0)
            )
            failed = bucket.failed - (before.failed if before else 0)
            if ok > 0:
                requests.labels(label, bucket.model, "ok").inc(ok)
            if failed > 0:
                requests.labels(label, bucket.model, "failed").inc(failed)

    def _label(self, key_id: str) -> str:
        """A key's label: its alias (else its id), for the first KEY_LABELS keys counted."""
        record = self._keys.get(key_id) if self._keys is not None else None
        name = (record.key_alias if record is not None else None) or key_id or "unknown"
        if name in self._labels:
            return name
        if len(self._labels) < KEY_LABELS:
            self._labels.add(name)
            return name
        return "other"


def _partition(name: str) -> TopicPartition:
    topic, _, partition = name.rpartition(":")
    return TopicPartition(topic, int(partition))


async def _read_ledger(
    settings: Settings, topic: str
) -> tuple[dict[bytes, UsageBucket], UsageCursor]:
    """Every committed bucket and the cursor (read after the fencing: the last writer's are
    final)."""
    buckets: dict[bytes, UsageBucket] = {}
    cursor = UsageCursor()
    async for records in scan(settings, [topic]):
        for record in records:
            if record.value is None:
                continue
            if record.key == CURSOR_KEY:
                cursor = UsageCursor.model_validate_json(record.value)
            else:
                bucket = UsageBucket.model_validate_json(record.value)
                buckets[bucket.record_key] = bucket
    return buckets, cursor
