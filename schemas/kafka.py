"""How every process lays out its topics (explicit partition counts) and reads partitions.

Every client is built by ``schemas.clients``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import TypeAlias

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from schemas import clients
from schemas.clients import check_credentials
from schemas.errors import BrokerUnavailable
from schemas.settings import Settings
from schemas.topics import Topics

log = logging.getLogger(__name__)
_THERE = (0, 36)  # created now, or TOPIC_ALREADY_EXISTS
_COMPACT = {"cleanup.policy": "compact"}


def topic_layout(settings: Settings, models: Iterable[str]) -> list[NewTopic]:
    """Every topic the service needs for these models, with its partition count and config."""
    topics = Topics(settings.topic_prefix)
    layout = [
        NewTopic(topics.results, settings.results_partitions, 1),
        NewTopic(topics.stream, settings.results_partitions, 1),
        NewTopic(topics.cancel, 1, 1, topic_configs={"retention.ms": "3600000"}),
        NewTopic(topics.dlq, 1, 1),
        NewTopic(topics.files, 1, 1, topic_configs=_COMPACT),
        NewTopic(topics.file_chunks, 1, 1, topic_configs=_COMPACT),
        NewTopic(topics.batches, 1, 1, topic_configs=_COMPACT),
        NewTopic(topics.batch_cancels, 1, 1, topic_configs=_COMPACT),
        NewTopic(topics.dispatch, 1, 1, topic_configs=_COMPACT),
        NewTopic(topics.keys, 1, 1, topic_configs=_COMPACT),
        NewTopic(topics.usage, 1, 1, topic_configs=_COMPACT),
        NewTopic(topics.admissions, 1, 1, topic_configs={"retention.ms": "3600000"}),
    ]
    for model in models:
        layout.append(NewTopic(topics.requests(model), settings.request_partitions, 1))
        layout.append(NewTopic(topics.bulk(model), settings.request_partitions, 1))
    return layout


def batch_results_topic(settings: Settings, batch_id: str, retention_s: int) -> NewTopic:
    """One batch's results topic: one partition, kept as long as its output is served."""
    name = Topics(settings.topic_prefix).batch_results(batch_id)
    return NewTopic(name, 1, 1, topic_configs={"retention.ms": str(retention_s * 1000)})


async def ensure_topics(
    settings: Settings,
    models: Iterable[str],
    extra: Iterable[NewTopic] = (),
    *,
    settle_all: bool = True,
) -> None:
    """Create the missing topics (the service's, then ``extra``); existing ones are kept.

    Then wait until they answer offset lookups: every one (``settle_all``: a service starting
    beside another that may have created them a moment ago), or only those created now and
    those with a partition still without a leader (a command run against a running service).
    """
    # First: a wrong CA or password would otherwise surface as aiokafka's errors and retries.
    await check_credentials(settings)
    admin = clients.admin(settings, "kc-admin")
    try:
        await admin.start()
        layout = topic_layout(settings, models) + list(extra)
        response = await admin.create_topics(layout)
        # Not only the topics this call created: a process starting beside this one (make
        # run's worker and front end) may have created others a moment ago, and a broker
        # names a leader a little before that leader answers offset lookups.
        created = {name for name, code, *_ in response.topic_errors if code == 0}
        existing = [n for n, code, *_ in response.topic_errors if code == _THERE[1]]
        if settle_all:
            waited = created | set(existing)
        else:
            waited = created | await _leaderless(admin, existing)
        await _wait_until_served(settings, [t for t in layout if t.name in waited])
    except KafkaError as exc:
        raise clients.unreachable(settings, exc) from exc
    finally:
        await admin.close()
    for name, code, *rest in response.topic_errors:
        if code not in _THERE:
            raise BrokerUnavailable(f"cannot create topic {name}: error {code} {rest}")


async def _leaderless(admin: AIOKafkaAdminClient, names: list[str]) -> set[str]:
    """Those of ``names`` with a partition that has no leader yet (one metadata request)."""
    if not names:
        return set()
    return {
        t["topic"]
        for t in await admin.describe_topics(names)
        if t["error_code"] or not t["partitions"] or any(p["leader"] < 0 for p in t["partitions"])
    }


async def _wait_until_served(settings: Settings, topics: list[NewTopic]) -> None:
    """Return once every partition of the topics answers offset lookups.

    Right after creation a broker may answer "not leader" for a moment, and consumers that
    look up offsets then log errors while they retry. ``end_offsets`` retries quietly.
    """
    if not topics:
        return
    probe = clients.consumer(settings, "kc-admin-probe")
    await probe.start()
    try:
        await probe.end_offsets(
            [TopicPartition(t.name, p) for t in topics for p in range(t.num_partitions)]
        )
    finally:
        await probe.stop()


async def tail(
    settings: Settings,
    client_id: str,
    *tps: TopicPartition,
    committed_only: bool = False,
    from_start: bool = False,
) -> AIOKafkaConsumer:
    """A started consumer assigned (no group) to ``tps``, at their ends (or beginnings)."""
    consumer = clients.consumer(settings, client_id, committed_only=committed_only)
    await consumer.start()
    consumer.assign(list(tps))
    if from_start:
        await consumer.seek_to_beginning(*tps)
    else:
        await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)  # resolves the end now, before anything is awaited on it
    return consumer


Record: TypeAlias = ConsumerRecord[bytes, bytes]


async def consume_forever(
    consumer: AIOKafkaConsumer, handle: Callable[[Record], None], what: str
) -> None:
    """Hand every record to ``handle``; Kafka errors are logged and retried."""
    while True:
        try:
            batches = await consumer.getmany(timeout_ms=1000)
        except KafkaError as exc:
            log.warning("%s consumer: %r; retrying", what, exc)
            await asyncio.sleep(1)
            continue
        for records in batches.values():
            for record in records:
                handle(record)


class Tail:
    """Partitions read from their end by a background task that hands every record on."""

    def __init__(self) -> None:
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(
        self,
        settings: Settings,
        client_id: str,
        handle: Callable[[Record], None],
        *tps: TopicPartition,
        committed_only: bool = False,
        from_start: bool = False,
    ) -> None:
        """Assign ``tps``, position at their ends (or beginnings), hand records to ``handle``."""
        # Made here, not in __init__: aiokafka clients bind to the running loop.
        consumer = await tail(
            settings, client_id, *tps, committed_only=committed_only, from_start=from_start
        )
        self._consumer = consumer
        self._task = asyncio.create_task(
            consume_forever(consumer, handle, client_id), name=client_id
        )

    async def stop(self) -> None:
        """Stop reading and disconnect."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
