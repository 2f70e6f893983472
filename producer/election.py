"""An election among the front ends: the one member of a consumer group that owns a one-partition
topic leads (the dispatcher, the ledger's writer); another takes over when it leaves or dies.

The leader's writes go in transactions under one transactional id shared by every front end,
so a new leader fences the one before it: leading is a hint, fencing is the guarantee.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from schemas import clients
from schemas.settings import Settings

_SESSION_MS = 6000
_HEARTBEAT_MS = 1000


class Election:
    """Membership of one group over one partition: ``leading`` while this member owns it."""

    def __init__(
        self,
        settings: Settings,
        client_id: str,
        group: str,
        topic: str,
        on_lost: Callable[[], Awaitable[None]],
    ) -> None:
        self._settings = settings
        self._client_id = client_id
        self._group = group
        self._partition = TopicPartition(topic, 0)
        self._on_lost = on_lost
        self._consumer: AIOKafkaConsumer | None = None
        self.leading = False

    async def start(self) -> None:
        """Join the group."""
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

    async def poll(self, timeout_s: float) -> None:
        """Keep the membership (and learn of a new assignment); reads nothing."""
        assert self._consumer is not None
        self._consumer.pause(*self._consumer.assignment())
        await self._consumer.getmany(timeout_ms=int(timeout_s * 1000))

    async def stop(self) -> None:
        """Leave the group (another member takes over)."""
        if self._consumer is not None:
            await self._consumer.stop()
        self.leading = False


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Leads while the member owns the partition."""

    def __init__(self, election: Election) -> None:
        self._election = election

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        if self._election._partition in set(revoked):
            self._election.leading = False
            await self._election._on_lost()

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        if self._election._partition in set(assigned):
            self._election.leading = True
