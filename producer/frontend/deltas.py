"""The stream topic: text deltas for server-sent event streams, and early replies.

Deltas travel on ``completions.stream`` to the front end's reply partition, outside Kafka
transactions (they must flow while generation runs); the final text still comes as a result.
So the caller sees exactly the final text once: deltas are taken in ``seq`` order per choice
(duplicates and gaps dropped), and when the result arrives whatever the deltas did not carry
is sent as one last delta. Records marked ``kc-kind: result`` are early copies of results
(see ``worker.side_channel``); they go to the reply router.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka import TopicPartition

from schemas.errors import WireError
from schemas.kafka import Record, Tail
from schemas.settings import Settings
from schemas.topics import Topics
from schemas.tracing import RecordHeaders
from schemas.wire import KIND, KIND_RESULT, StreamChunk, decode_chunk

log = logging.getLogger(__name__)


@dataclass(slots=True)
class StreamState:
    """What one streaming request has received so far, per choice."""

    queue: asyncio.Queue[StreamChunk] = field(default_factory=asyncio.Queue)
    next_seq: dict[int, int] = field(default_factory=dict)

    def accept(self, chunk: StreamChunk) -> bool:
        """True when the chunk is the next one of its choice (then it is counted)."""
        expected = self.next_seq.get(chunk.choice_index, 0)
        if chunk.seq != expected:
            return False
        self.next_seq[chunk.choice_index] = expected + 1
        return True


class StreamRouter:
    """The stream-topic consumer of one front-end instance (its reply partition)."""

    def __init__(
        self,
        settings: Settings,
        partition: int,
        on_result: Callable[[bytes | None, RecordHeaders], None],
    ) -> None:
        self._settings = settings
        self._on_result = on_result
        self._tp = TopicPartition(Topics(settings.topic_prefix).stream, partition)
        self._streams: dict[str, StreamState] = {}
        self._tail = Tail()

    async def start(self) -> None:
        """Assign the partition and read from its end."""
        await self._tail.start(self._settings, "kc-frontend-stream", self._route, self._tp)

    async def stop(self) -> None:
        """Stop consuming."""
        await self._tail.stop()

    def open(self, request_id: str) -> StreamState:
        """Start receiving the deltas of a request (before its tasks are sent)."""
        state = StreamState()
        self._streams[request_id] = state
        return state

    def close(self, request_id: str) -> None:
        """The stream is over."""
        self._streams.pop(request_id, None)

    def _route(self, record: Record) -> None:
        if (KIND, KIND_RESULT) in record.headers:
            self._on_result(record.value, record.headers)
            return
        try:
            chunk = decode_chunk(record.value)
        except WireError as exc:
            log.warning("ignoring a record on the stream topic: %s", exc)
            return
        state = self._streams.get(chunk.request_id)
        if state is not None:
            state.queue.put_nowait(chunk)
