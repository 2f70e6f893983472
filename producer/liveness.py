"""Which models have a live worker: the members of each model's consumer group.

A background task describes every configured model's group every ``KC_LIVENESS_REFRESH_S``,
so the request path reads a number and answers a 503 at once instead of waiting on Kafka. A
worker that dies without leaving stays a member until its session times out (10 s by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from schemas.kafka import client_options
from schemas.settings import Settings
from schemas.topics import Topics

log = logging.getLogger(__name__)
_ERROR_CODE, _GROUP, _STATE, _MEMBERS = 0, 1, 2, 5


class Liveness:
    """Live worker counts per model, refreshed in the background."""

    def __init__(self, settings: Settings, models: list[str]) -> None:
        self._settings = settings
        self._topics = Topics(settings.topic_prefix)
        self._groups = {self._topics.worker_group(m): m for m in models}
        self._members: dict[str, int] = {}
        self._admin = AIOKafkaAdminClient(**client_options(settings, "kc-frontend-liveness"))
        self._task: asyncio.Task[None] | None = None
        self.ready = False

    def members(self, model: str) -> int:
        """Live workers of a model at the last refresh."""
        return self._members.get(model, 0)

    async def start(self) -> None:
        """Connect, take a first reading, and keep refreshing."""
        await self._admin.start()
        await self.refresh()
        self._task = asyncio.create_task(self._refresh_forever(), name="kc-liveness")

    async def stop(self) -> None:
        """Stop refreshing."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._admin.close()

    async def refresh(self) -> None:
        """Describe every model's worker group once."""
        if not self._groups:
            self.ready = True
            return
        responses = await self._admin.describe_consumer_groups(list(self._groups))
        members: dict[str, int] = {}
        for response in responses:
            for group in response.groups:
                model = self._groups.get(group[_GROUP])
                if model is not None and group[_ERROR_CODE] == 0 and group[_STATE] != "Dead":
                    members[model] = len(group[_MEMBERS])
        self._members = members
        self.ready = True

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.liveness_refresh_s)
            try:
                await self.refresh()
            except KafkaError as exc:
                log.warning("cannot describe worker groups: %r", exc)
