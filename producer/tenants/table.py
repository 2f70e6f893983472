"""A compacted topic as a table: read whole from its beginning, then followed.

Every front end keeps one per table (keys, usage); each record is handed to the owner's
``handle`` in offset order. ``ready`` turns true once what the topic held at start-up is read,
so a front end answers nothing from a table that is still loading.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from schemas.kafka import Record, tail
from schemas.settings import Settings

log = logging.getLogger(__name__)
_POLL_MS = 100
_RETRY_S = 1.0


class Table:
    """One partition of a compacted topic, read committed-only from its beginning."""

    def __init__(
        self, settings: Settings, client_id: str, topic: str, handle: Callable[[Record], None]
    ) -> None:
        self._settings = settings
        self._client_id = client_id
        self._tp = TopicPartition(topic, 0)
        self._handle = handle
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._loaded = asyncio.Event()

    @property
    def ready(self) -> bool:
        """Whether what the topic held at start-up has been read."""
        return self._loaded.is_set()

    async def start(self) -> None:
        """Connect and start reading (``ready`` once caught up with the topic's end)."""
        consumer = await tail(
            self._settings, self._client_id, self._tp, committed_only=True, from_start=True
        )
        self._consumer = consumer
        end = (await consumer.end_offsets([self._tp]))[self._tp]
        self._task = asyncio.create_task(self._run(consumer, end), name=self._client_id)

    async def loaded(self, timeout_s: float = 30.0) -> None:
        """Wait until ``ready`` (the CLI reads a table once, then answers)."""
        await asyncio.wait_for(self._loaded.wait(), timeout_s)

    async def stop(self) -> None:
        """Stop reading and disconnect."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def _run(self, consumer: AIOKafkaConsumer, end: int) -> None:
        while True:
            try:
                if not self.ready and await consumer.position(self._tp) >= end:
                    self._loaded.set()
                batches = await consumer.getmany(timeout_ms=_POLL_MS)
            except KafkaError as exc:
                log.warning("%s: %r; retrying", self._client_id, exc)
                await asyncio.sleep(_RETRY_S)
                continue
            for records in batches.values():
                for record in records:
                    self._handle(record)
