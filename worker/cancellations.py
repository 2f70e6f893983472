"""Cancelled batches: the worker skips a cancelled batch's tasks that have not started.

Every worker reads the compacted batch-cancels topic whole (no group), from its beginning and
then as it grows, so a worker that starts after a cancellation still knows of it. A skipped
task gets a ``cancelled`` error result, decided like an expired one: no model or vendor call.
"""

from __future__ import annotations

import logging

from aiokafka import TopicPartition
from pydantic import ValidationError

from schemas.batch import BatchCancel
from schemas.kafka import Record, Tail
from schemas.settings import Settings
from schemas.topics import Topics

log = logging.getLogger(__name__)


class CancelledBatches:
    """The ids of every cancelled batch, kept up to date by a background reader."""

    def __init__(self) -> None:
        self._ids: set[str] = set()
        self._tail = Tail()

    def __contains__(self, batch_id: object) -> bool:
        return batch_id in self._ids

    def handle(self, record: Record) -> None:
        """Take one record of the batch-cancels topic."""
        if record.value is None:
            return  # a tombstone: nothing to skip
        try:
            self._ids.add(BatchCancel.model_validate_json(record.value).batch_id)
        except ValidationError as exc:
            log.warning("ignoring a record on the batch-cancels topic: %s", exc)

    async def start(self, settings: Settings, client_id: str) -> None:
        """Read the topic from its beginning, then follow it in the background."""
        tp = TopicPartition(Topics(settings.topic_prefix).batch_cancels, 0)
        await self._tail.start(settings, client_id, self.handle, tp, from_start=True)

    async def stop(self) -> None:
        """Stop reading and disconnect."""
        await self._tail.stop()
