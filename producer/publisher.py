"""The publisher: puts tasks on the request topics (acks=all, idempotent producer)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from schemas import clients, tracing
from schemas.errors import BrokerUnavailable
from schemas.settings import Settings
from schemas.topics import Topics
from schemas.wire import CancelMessage, TaskMessage, encode


class Publisher:
    """Sends task messages to their model's interactive or bulk lane."""

    def __init__(self, settings: Settings, client_id: str, *, linger_ms: int = 0) -> None:
        self._topics = Topics(settings.topic_prefix)
        self._settings = settings
        self._client_id = client_id
        self._linger_ms = linger_ms
        self._bootstrap = settings.kafka_bootstrap
        self._producer: AIOKafkaProducer | None = None

    @property
    def producer(self) -> AIOKafkaProducer:
        """The started producer."""
        if self._producer is None:
            raise RuntimeError("Publisher.start() was not awaited")
        return self._producer

    async def start(self) -> None:
        """Connect, or raise BrokerUnavailable."""
        # aiokafka clients bind to the running loop, so they are made here, not in __init__.
        self._producer = clients.producer(
            self._settings, self._client_id, linger_ms=self._linger_ms
        )
        try:
            await self._producer.start()
        except KafkaError as exc:
            raise BrokerUnavailable(f"cannot reach Kafka at {self._bootstrap}: {exc!r}") from exc

    async def stop(self) -> None:
        """Flush what is pending and disconnect."""
        if self._producer is not None:
            await self._producer.stop()

    async def publish(self, tasks: Sequence[TaskMessage], timeout_s: float | None = None) -> None:
        """Send the tasks and wait until Kafka has them all (acks=all), within ``timeout_s``."""
        # Without a bound a caller waits out aiokafka's own timeouts (40 s for the metadata,
        # as long again for the batch) while the broker is down, far past its deadline.
        try:
            await asyncio.wait_for(self._send_all(tasks), timeout_s)
        except TimeoutError as exc:
            raise BrokerUnavailable(
                f"Kafka at {self._bootstrap} did not take the tasks within {timeout_s:.1f} s"
            ) from exc
        except KafkaError as exc:
            raise BrokerUnavailable(f"Kafka did not take the tasks: {exc!r}") from exc

    async def _send_all(self, tasks: Sequence[TaskMessage]) -> None:
        spans = [self._span(t) for t in tasks] if self._settings.tracing else []
        sent = []
        for i, task in enumerate(tasks):
            headers = tracing.span_headers(spans[i]) if spans else None
            value, key = encode(task), task.request_id.encode()
            sent.append(await self.producer.send(self.topic_of(task), value, key, headers=headers))
        try:
            await asyncio.gather(*sent)
        finally:
            for span in spans:
                span.end()

    def _span(self, task: TaskMessage) -> tracing.Span:
        """The send span of one task: the parent of its worker's spans (via its headers)."""
        attributes: tracing.Attributes = {
            "gen_ai.request.model": task.model,
            "kc.choice_index": task.choice_index,
        }
        return tracing.sending(self.topic_of(task), task.request_id, attributes)

    async def cancel(self, request_id: str) -> None:
        """Tell every worker that nobody waits for this request any more."""
        message = encode(CancelMessage(request_id=request_id))
        await self.producer.send_and_wait(self._topics.cancel, message, request_id.encode())

    async def partitions(self, topic: str) -> set[int]:
        """The partitions of a topic (waits for its metadata)."""
        return set(await self.producer.partitions_for(topic))

    def topic_of(self, task: TaskMessage) -> str:
        """The request topic of a task's model and lane."""
        if task.lane == "bulk":
            return self._topics.bulk(task.model)
        return self._topics.requests(task.model)
