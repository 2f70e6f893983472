"""Streaming, early replies and cancellation beside the transactional loop.

Deltas of streaming tasks go to ``completions.stream`` at once, with an idempotent producer of
their own (transactions would hold them back until commit). The final text still goes with
the transaction, so a delta lost or repeated costs nothing but smoothness: the front end sends
the caller exactly the final text.

Early replies: the moment a task of a waiting caller finishes, a copy of its result goes the
same way (marked with the ``kc-kind: result`` header), so the caller is answered without
waiting for the transaction and for the tasks ahead of it on its partition. The committed copy
still follows on the results topic; the front end answers from whichever comes first. Being
sent by the producer of the deltas, to the same partition, it arrives after them.

Cancellations come from ``completions.cancel``, which every worker reads whole (no group),
from its end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from schemas import clients
from schemas.errors import WireError
from schemas.kafka import Record, consume_forever, tail
from schemas.settings import Settings
from schemas.topics import Topics
from schemas.tracing import Headers
from schemas.wire import KIND, KIND_RESULT, ResultMessage, StreamChunk, decode_cancel, encode
from worker.task import Task

log = logging.getLogger(__name__)


class Streamer:
    """Sends the deltas of streaming tasks, numbered per (request, choice)."""

    def __init__(self, settings: Settings, client_id: str) -> None:
        self._topics = Topics(settings.topic_prefix)
        self._producer = clients.producer(settings, client_id, linger_ms=0)
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
        try:
            await self._send(task, encode(chunk))
        except KafkaError as exc:
            log.warning("dropping a delta of %s: %r", msg.request_id, exc)

    async def reply(self, task: Task, result: ResultMessage, trace: Headers | None = None) -> None:
        """Queue the early copy of a result (not waiting: the committed copy is the backstop).

        ``trace``: the headers of the result's trace, as its committed copy has them.
        """
        try:
            await self._send(task, encode(result), [(KIND, KIND_RESULT), *(trace or ())])
        except KafkaError as exc:
            log.debug("no early reply for %s: %r", task.message.request_id, exc)

    async def _send(
        self, task: Task, value: bytes, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        msg = task.message
        partition = msg.reply_partition if msg.reply_partition in self._partitions else None
        await self._producer.send(
            self._topics.stream,
            value,
            msg.request_id.encode(),
            partition=partition,
            headers=headers,
        )

    def forget(self, task: Task) -> None:
        """The task is over: drop its counter."""
        self._seq.pop((task.message.request_id, task.message.choice_index), None)


async def watch_cancellations(settings: Settings, cancel: Callable[[str], None]) -> None:
    """Call ``cancel(request_id)`` for every cancellation published from now on."""
    # The cancel topic has one partition (schemas.kafka.topic_layout).
    topic = TopicPartition(Topics(settings.topic_prefix).cancel, 0)
    consumer = await tail(settings, "kc-worker-cancel", topic)
    try:

        def handle(record: Record) -> None:
            try:
                cancel(decode_cancel(record.value).request_id)
            except WireError as exc:
                log.warning("ignoring a record on the cancel topic: %s", exc)

        await consume_forever(consumer, handle, "cancel")
    finally:
        await consumer.stop()
