"""Admissions: the rpm limit held across every front end, through one Kafka partition.

A request under a key with an ``rpm_limit`` is admitted through the admissions topic: the
front end appends an admission record (the key id, the time, the key's limit) and waits until
it reads that record back. Every front end reads the same partition in the same order and
decides each record alike (``Admissions.decide``: admitted while fewer than the limit were
admitted in the 60 s before it), so two front ends never both take the last place of a
minute: the limit holds exactly, at the cost of one round trip to the broker for the keys that
have a limit (keys without one never touch the topic). A front end that starts reads the two
minutes before, so it decides as the others do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import defaultdict, deque

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import BaseModel, ConfigDict, ValidationError

from schemas import clients
from schemas.errors import BrokerUnavailable
from schemas.kafka import Record
from schemas.settings import Settings
from schemas.topics import Topics

log = logging.getLogger(__name__)
WINDOW_S = 60.0
_HISTORY_S = 2 * WINDOW_S
_ECHO_WAIT_S = 5.0
_POLL_MS = 100
_RETRY_S = 1.0


class Admission(BaseModel):
    """One request asking a place in its key's minute."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: int = 1
    id: str
    key_id: str
    at: float  # epoch seconds, the asking front end's clock
    limit: int  # the key's rpm_limit when it asked


class Admissions:
    """Every front end's fold of the admissions topic, and the asking of one place."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._tp = TopicPartition(Topics(settings.topic_prefix).admissions, 0)
        self._admitted: dict[str, deque[float]] = defaultdict(deque)
        self._waiting: dict[str, asyncio.Future[bool]] = {}
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect, read the last two minutes, follow."""
        producer = clients.producer(self._settings, "kc-admissions", linger_ms=0)
        consumer = clients.consumer(self._settings, "kc-admissions", auto_offset_reset="latest")
        await producer.start()
        await consumer.start()
        consumer.assign([self._tp])
        since = int((time.time() - _HISTORY_S) * 1000)
        found = await consumer.offsets_for_times({self._tp: since})
        start = found.get(self._tp)
        if start is not None:
            consumer.seek(self._tp, start.offset)
        else:
            await consumer.seek_to_end(self._tp)
        self._producer, self._consumer = producer, consumer
        self._task = asyncio.create_task(self._run(consumer), name="kc-admissions")

    async def stop(self) -> None:
        """Stop reading and disconnect."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for client in (self._consumer, self._producer):
            if client is not None:
                await client.stop()

    def recent(self, key_id: str, now: float) -> list[float]:
        """The times of the key's admitted requests in the last 60 s, oldest first."""
        times = self._admitted.get(key_id)
        return [t for t in times if t > now - WINDOW_S] if times else []

    async def admit(self, key_id: str, limit: int) -> bool:
        """Ask a place for one request of ``key_id``; True when the log admits it."""
        assert self._producer is not None
        ask = Admission(id=uuid.uuid4().hex, key_id=key_id, at=time.time(), limit=limit)
        answer = asyncio.get_running_loop().create_future()
        self._waiting[ask.id] = answer
        try:
            await self._producer.send_and_wait(
                self._tp.topic, ask.model_dump_json().encode(), key_id.encode()
            )
            return await asyncio.wait_for(answer, _ECHO_WAIT_S)
        except (KafkaError, TimeoutError) as exc:
            raise BrokerUnavailable(f"the admissions topic did not answer: {exc!r}") from exc
        finally:
            self._waiting.pop(ask.id, None)

    def decide(self, ask: Admission) -> bool:
        """Whether the log admits ``ask``: fewer than its limit admitted in the 60 s before."""
        times = self._admitted[ask.key_id]
        while times and times[0] <= ask.at - WINDOW_S:
            times.popleft()
        # Every admitted record before this one in the log counts, whatever its clock says:
        # the log's order, not the front ends' clocks, decides who came first.
        admitted = len(times) < ask.limit
        if admitted:
            times.append(ask.at)
        return admitted

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=_POLL_MS)
            except KafkaError as exc:
                log.warning("admissions: %r; retrying", exc)
                await asyncio.sleep(_RETRY_S)
                continue
            for records in batches.values():
                for record in records:
                    self._take(record)

    def _take(self, record: Record) -> None:
        try:
            ask = Admission.model_validate_json(record.value or b"")
        except ValidationError:
            return
        admitted = self.decide(ask)
        answer = self._waiting.get(ask.id)
        if answer is not None and not answer.done():
            answer.set_result(admitted)
