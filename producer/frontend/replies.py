"""Correlating results back to waiting callers.

Each front-end instance owns one partition of the results topic (``KC_REPLY_PARTITION``) and
puts it in every task it sends; workers produce the result there. One long-lived consumer,
assigned (not subscribed) to that partition and reading only committed records, hands each
result to the future of the caller waiting for that (request id, choice index). Results for
requests nobody here waits for (a restarted instance, a replica sharing the partition) are
counted and ignored, so two replicas sharing a partition stay correct, only less efficient.

Early replies: workers also send a copy of each result the moment it is ready, on the stream
topic (``deliver_early``). The caller is answered by whichever copy comes first; a request
answered early is remembered (bounded) so its committed copy, when it comes, is recognised by
its key without being parsed, and is not counted as unmatched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from dataclasses import dataclass, field

from aiokafka import TopicPartition

from schemas import tracing
from schemas.errors import ConfigError, WireError
from schemas.kafka import Record, Tail
from schemas.metrics import FrontendMetrics
from schemas.settings import Settings
from schemas.topics import Topics
from schemas.tracing import RecordHeaders
from schemas.wire import ResultMessage, decode_result

log = logging.getLogger(__name__)
# How many requests answered early are remembered until their committed copies arrive; an
# entry whose copy never comes (its worker died before committing) is pushed out by newer ones.
_EARLY_MEMORY = 65_536


@dataclass(slots=True)
class Pending:
    """The futures of one request, one per choice index."""

    futures: dict[int, asyncio.Future[ResultMessage]] = field(default_factory=dict)

    async def wait(self, timeout_s: float) -> dict[int, ResultMessage]:
        """Wait for every choice until the timeout; return those that arrived."""
        futures = list(self.futures.values())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*futures), timeout_s)
        return {i: f.result() for i, f in self.futures.items() if f.done() and not f.cancelled()}


class ReplyRouter:
    """The results consumer of one front-end instance."""

    def __init__(self, settings: Settings, metrics: FrontendMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        topics = Topics(settings.topic_prefix)
        self._tp = TopicPartition(topics.results, settings.reply_partition)
        self._early_topic = topics.stream
        self._tail = Tail()
        self._waiting: dict[str, Pending] = {}
        # request id (as the record key) -> committed copies still expected
        self._answered_early: OrderedDict[bytes, int] = OrderedDict()
        self.ready = False

    @property
    def partition(self) -> int:
        """The results partition this instance reads."""
        return int(self._tp.partition)

    async def start(self, partitions: set[int]) -> None:
        """Assign the reply partition (one of ``partitions``) and position at its end."""
        if self._tp.partition not in partitions:
            raise ConfigError(
                f"KC_REPLY_PARTITION={self._tp.partition}: {self._tp.topic} has partitions "
                f"0..{len(partitions) - 1}"
            )
        await self._tail.start(
            self._settings, "kc-frontend-replies", self._route, self._tp, committed_only=True
        )
        self.ready = True

    async def stop(self) -> None:
        """Stop consuming; waiting callers are cancelled."""
        self.ready = False
        await self._tail.stop()
        for pending in self._waiting.values():
            for future in pending.futures.values():
                future.cancel()

    def expect(self, request_id: str, choices: int) -> Pending:
        """Register a request before its tasks are sent."""
        loop = asyncio.get_running_loop()
        pending = Pending({i: loop.create_future() for i in range(choices)})
        self._waiting[request_id] = pending
        return pending

    def forget(self, request_id: str) -> None:
        """The caller has its answer (or gave up)."""
        self._waiting.pop(request_id, None)

    def deliver_early(self, raw: bytes | None, headers: RecordHeaders = ()) -> None:
        """An early copy of a result: answer its caller if it still waits, else drop it."""
        try:
            result = decode_result(raw)
        except WireError as exc:
            log.warning("ignoring an early reply on the stream topic: %s", exc)
            return
        if not self._resolve(result, headers, early=True):
            return  # the committed copy came first, or nobody here waits for it
        key = result.request_id.encode()
        self._answered_early[key] = self._answered_early.get(key, 0) + 1
        self._answered_early.move_to_end(key)
        if len(self._answered_early) > _EARLY_MEMORY:
            self._answered_early.popitem(last=False)

    def _route(self, record: Record) -> None:
        if record.key is not None and self._confirmed(record.key):
            return
        try:
            result = decode_result(record.value)
        except WireError as exc:
            log.warning("ignoring a record on the results topic: %s", exc)
            self._metrics.results_unmatched.inc()
            return
        if not self._resolve(result, record.headers, early=False):
            self._metrics.results_unmatched.inc()

    def _confirmed(self, key: bytes) -> bool:
        """True when this committed result's caller was already answered by an early copy."""
        expected = self._answered_early.get(key)
        if expected is None:
            return False
        if expected > 1:
            self._answered_early[key] = expected - 1
        else:
            del self._answered_early[key]
        return True

    def _resolve(self, result: ResultMessage, headers: RecordHeaders, *, early: bool) -> bool:
        """Hand the result to its waiting future; False when nobody waits for it."""
        pending = self._waiting.get(result.request_id)
        future = pending.futures.get(result.choice_index) if pending else None
        if future is None or future.done():
            return False
        future.set_result(result)
        if self._settings.tracing:
            _reply_span(result, self._early_topic if early else self._tp.topic, headers, early)
        return True


def _reply_span(result: ResultMessage, topic: str, headers: RecordHeaders, early: bool) -> None:
    """The reply: the result reached its caller, a child of the worker's send of it."""
    attributes: tracing.Attributes = {
        "messaging.system": "kafka",
        "messaging.operation.type": "receive",
        "messaging.destination.name": topic,
        "messaging.kafka.message.key": result.request_id,
        "gen_ai.request.model": result.model,
        "kc.choice_index": result.choice_index,
        "kc.early_reply": early,
    }
    span = tracing.tracer().start_span(
        f"receive {topic}",
        tracing.extract(headers),
        kind=tracing.SpanKind.CONSUMER,
        attributes=attributes,
    )
    span.end()
