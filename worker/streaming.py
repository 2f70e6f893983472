"""Streaming and cancellation beside the transactional loop.

Deltas of streaming tasks go to ``completions.stream`` at once, with an idempotent producer of
their own (transactions would hold them back until commit). The final text still goes with
the transaction, so a delta lost or repeated costs nothing but smoothness: the front end sends
the caller exactly the final text. Cancellations come from ``completions.cancel``, which every
worker reads whole (no group), from its end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from schemas.errors import WireError
from schemas.kafka import client_options, consume_forever, tail
from schemas.settings import Settings
from schemas.topics import Topics
from schemas.wire import StreamChunk, decode_cancel, encode
from worker.task import Task

log = logging.getLogger(__name__)


class Streamer:
    """Sends the deltas of streaming tasks, numbered per (request, choice)."""

    def __init__(self, settings: Settings, client_id: str) -> None:
        self._topics = Topics(settings.topic_prefix)
        self._producer = AIOKafkaProducer(
            acks="all", linger_ms=0, enable_idempotence=True, **client_options(settings, client_id)
        )
        self._seq: dict[tuple[str, int], int] = {}
        self._partitions: set[int] = set()

    async def start(self) -> None:
        """Connect and learn the stream topic's partitions."""
        await self._producer.start()
        self._partitions = set(await self._producer.partitions_for(self._topics.stream))

    async def stop(self) -> None:
        """Flush and disconnect."""
        await self._producer.stop()

    async def send(self, task: Task, text: str) -> None:
        """Queue one delta (not waiting for delivery: a lost delta is repaired by the result)."""
        msg = task.message
        key = (msg.request_id, msg.choice_index)
        seq = self._seq.get(key, 0)
        self._seq[key] = seq + 1
        chunk = StreamChunk(
            request_id=msg.request_id, choice_index=msg.choice_index, seq=seq, delta=text
        )
        partition = msg.reply_partition if msg.reply_partition in self._partitions else None
        try:
            await self._producer.send(
                self._topics.stream, encode(chunk), msg.request_id.encode(), partition=partition
            )
        except KafkaError as exc:
            log.warning("dropping a delta of %s: %r", msg.request_id, exc)

    def forget(self, task: Task) -> None:
        """The task is over: drop its counter."""
        self._seq.pop((task.message.request_id, task.message.choice_index), None)


async def watch_cancellations(settings: Settings, cancel: Callable[[str], None]) -> None:
    """Call ``cancel(request_id)`` for every cancellation published from now on."""
    # The cancel topic has one partition (schemas.kafka.topic_layout).
    topic = TopicPartition(Topics(settings.topic_prefix).cancel, 0)
    consumer = await tail(settings, "kc-worker-cancel", topic)
    try:

        def handle(raw: bytes | None) -> None:
            try:
                cancel(decode_cancel(raw).request_id)
            except WireError as exc:
                log.warning("ignoring a record on the cancel topic: %s", exc)

        await consume_forever(consumer, handle, "cancel")
    finally:
        await consumer.stop()
