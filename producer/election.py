"""An election among the front ends: the one member of a consumer group that owns a one-partition
topic leads (the dispatcher, the ledger's writer); another takes over when it leaves or dies.

The leader's writes go in transactions under one transactional id shared by every front end,
so a new leader fences the one before it: leading is a hint, fencing is the guarantee. The loop
is the same for every role: keep the membership, take over when elected (fencing the last
leader and reading what it committed), take turns while leading, and step down on being fenced
or on an error (retrying after a second: a bug in a turn must not end the role for every front
end).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced

from schemas import clients
from schemas.errors import BrokerUnavailable
from schemas.settings import Settings

log = logging.getLogger(__name__)
_SESSION_MS = 6000
_HEARTBEAT_MS = 1000
_RETRY_S = 1.0


class Role(Protocol):
    """What a leader does (``producer.jobs.batch.dispatch``, ``producer.tenants.accountant``)."""

    @property
    def holding(self) -> bool:
        """Whether it holds its leader's clients (taken over, not stepped down)."""

    async def take_over(self) -> None:
        """Fence the last leader and read what it committed."""

    async def turn(self) -> None:
        """One turn of the leader's work."""

    async def step_down(self) -> None:
        """Let go of the leader's clients (idempotent)."""


class Election:
    """Membership of one group over one partition, and the role's loop: ``leading`` while this
    member owns the partition and holds the role's clients."""

    def __init__(
        self,
        settings: Settings,
        client_id: str,
        group: str,
        topic: str,
        role: Role,
        idle_s: float,
        busy_s: float,
    ) -> None:
        self._settings = settings
        self._client_id = client_id
        self._group = group
        self._partition = TopicPartition(topic, 0)
        self._role = role
        self._idle_s, self._busy_s = idle_s, busy_s
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.elected = False

    @property
    def leading(self) -> bool:
        """Whether this member leads now (elected, and the role took over)."""
        return self.elected and self._role.holding

    async def start(self) -> None:
        """Join the group and start the role's loop."""
        consumer = clients.consumer(
            self._settings,
            self._client_id,
            committed_only=True,
            group_id=self._group,
            auto_offset_reset="earliest",
            session_timeout_ms=_SESSION_MS,
            heartbeat_interval_ms=_HEARTBEAT_MS,
        )
        await consumer.start()
        consumer.subscribe([self._partition.topic], listener=_Listener(self))
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(consumer), name=self._client_id)

    async def stop(self) -> None:
        """Stop the loop, step down and leave the group (another member takes over)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._role.step_down()
        if self._consumer is not None:
            await self._consumer.stop()
        self.elected = False

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                # Polling keeps the membership; what the last leader committed is read at
                # take-over, not here.
                consumer.pause(*consumer.assignment())
                wait_s = self._busy_s if self._role.holding else self._idle_s
                await consumer.getmany(timeout_ms=int(wait_s * 1000))
                if self.elected and not self._role.holding:
                    await self._role.take_over()
                if self.leading:
                    await self._role.turn()
            except ProducerFenced:
                log.warning("%s: another front end took over", self._client_id)
                await self._role.step_down()
            except (KafkaError, BrokerUnavailable) as exc:
                log.warning("%s: %r; retrying", self._client_id, exc)
                await self._role.step_down()
                await asyncio.sleep(_RETRY_S)
            except Exception:  # a bug in a turn must not end the role for every front end
                log.exception("%s: a turn failed; retrying", self._client_id)
                await self._role.step_down()
                await asyncio.sleep(_RETRY_S)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Elected while the member owns the partition."""

    def __init__(self, election: Election) -> None:
        self._election = election

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        if self._election._partition in set(revoked):
            self._election.elected = False
            await self._election._role.step_down()

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        if self._election._partition in set(assigned):
            self._election.elected = True
