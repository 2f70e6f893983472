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
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    GroupCoordinatorNotAvailableError,
    KafkaError,
    NotCoordinatorError,
)
from aiokafka.protocol.admin import DescribeGroupsRequest_v1, DescribeGroupsRequest_v2
from aiokafka.protocol.api import Request

from schemas import clients
from schemas.settings import Settings
from schemas.topics import Topics

log = logging.getLogger(__name__)
_ERROR_CODE, _GROUP, _STATE, _MEMBERS = 0, 1, 2, 5
# A fresh broker creates its offsets topic on the first group lookup, and a coordinator moves
# when a broker restarts: states that pass by themselves, so not warnings (the next refresh
# reads the groups; /readyz says not ready until one has).
_PASSING = (GroupCoordinatorNotAvailableError, CoordinatorLoadInProgressError, NotCoordinatorError)


class _DescribeGroups(Request[DescribeGroupsRequest_v1 | DescribeGroupsRequest_v2]):  # type: ignore[misc]
    """DescribeGroups capped at v2.

    aiokafka 0.14 pairs DescribeGroups v3 with the v2 response schema, so against Kafka 4
    (which negotiates v3+) the admin client's describe_consumer_groups fails to decode.
    """

    API_KEY = 15

    def __init__(self, groups: list[str]) -> None:
        self._groups = groups

    def build(
        self, request_struct_class: type[DescribeGroupsRequest_v1 | DescribeGroupsRequest_v2]
    ) -> DescribeGroupsRequest_v1 | DescribeGroupsRequest_v2:
        return request_struct_class(self._groups)


class Liveness:
    """Live worker counts per model, refreshed in the background."""

    def __init__(self, settings: Settings, models: list[str]) -> None:
        self._settings = settings
        self._topics = Topics(settings.topic_prefix)
        self._groups = {self._topics.worker_group(m): m for m in models}
        self._members: dict[str, int] = {}
        self._admin: AIOKafkaAdminClient | None = None
        self._task: asyncio.Task[None] | None = None
        self.ready = False

    def members(self, model: str) -> int:
        """Live workers of a model at the last refresh."""
        return self._members.get(model, 0)

    async def start(self) -> None:
        """Connect, take a first reading (Kafka may still be electing), and keep refreshing."""
        # Made here, not in __init__: aiokafka clients bind to the running loop.
        self._admin = clients.admin(self._settings, "kc-frontend-liveness")
        await self._admin.start()
        await self._refresh_logged()
        self._task = asyncio.create_task(self._refresh_forever(), name="kc-liveness")

    async def stop(self) -> None:
        """Stop refreshing."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._admin is not None:
            await self._admin.close()

    async def refresh(self) -> None:
        """Describe every model's worker group once."""
        if not self._groups or self._admin is None:
            self.ready = bool(self._admin)
            return
        by_node: dict[int, list[str]] = {}
        for group in self._groups:
            by_node.setdefault(await self._admin.find_coordinator(group), []).append(group)
        responses = [
            await self._admin._client.send(node, _DescribeGroups(groups))
            for node, groups in by_node.items()
        ]
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
            await self._refresh_logged()

    async def _refresh_logged(self) -> None:
        try:
            await self.refresh()
        except _PASSING as exc:
            log.debug("worker groups not described yet: %r", exc)
        except KafkaError as exc:
            log.warning("cannot describe worker groups: %r", exc)
