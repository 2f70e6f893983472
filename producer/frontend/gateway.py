"""The gateway: one front-end instance's clients and the steps every route takes.

Admission (``check_access``, ``check_room``, ``check_models``), the tasks of a request
(``tasks_for``), the one lifecycle of every request, streamed or not (``flight``: in-flight
count and gauge, publish under the deadline, cancellation when the caller left), and
``settle``: the status and body of the results, logged and measured once. ``run`` is both for
a full answer; the routes in ``producer.frontend.routes`` and the serving objects of
``producer.frontend.serving`` use them.
"""

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiokafka.errors import KafkaError
from fastapi import Request
from prometheus_client import CollectorRegistry

from producer.assemble import assemble
from producer.frontend.auth import KeyChecker
from producer.frontend.deltas import StreamRouter, StreamState
from producer.frontend.liveness import Liveness
from producer.frontend.replies import Pending, ReplyRouter
from producer.jobs.batch.dispatch import Dispatcher
from producer.jobs.batch.service import BatchService, Pricing
from producer.publisher import Publisher
from producer.refusals import ApiError, model_errors, model_not_allowed
from producer.tenants.accountant import Accountant
from producer.tenants.admissions import Admissions
from producer.tenants.keybook import KeyBook
from producer.tenants.quota import Quota
from producer.tenants.usagebook import UsageBook
from schemas import logs, tracing
from schemas.api import CompletionResponse, ErrorBody, ErrorDetail
from schemas.errors import ConfigError, ModelError, ModelUnavailable
from schemas.kafka import ensure_topics
from schemas.metrics import FrontendMetrics
from schemas.registry import ModelSpec, Registry
from schemas.settings import Settings
from schemas.topics import Topics
from schemas.wire import ChatMessage, ResultMessage, Sampling, TaskMessage

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Flight:
    """One admitted request on its way: its tasks, futures, deadline and (streamed) deltas."""

    tasks: list[TaskMessage]
    pending: Pending
    deadline: float  # epoch seconds
    stream: StreamState | None
    started: float  # perf_counter, for the latency
    settled: bool = False

    @property
    def models(self) -> list[str]:
        """The model of each choice."""
        return [t.model for t in self.tasks]

    async def wait(self) -> dict[int, ResultMessage]:
        """The results that arrive by the deadline."""
        return await self.pending.wait(max(0.0, self.deadline - time.time()))


@dataclass(frozen=True, slots=True)
class Settled:
    """A request's results and the status and body they make."""

    results: dict[int, ResultMessage]
    status: int
    answer: CompletionResponse | ErrorBody


class Gateway:
    """One front-end instance: its clients, key checker and metrics, and the request steps."""

    def __init__(
        self, settings: Settings, registry: Registry, metrics_registry: CollectorRegistry
    ) -> None:
        if not settings.api_keys and not settings.admin_keys:
            raise ConfigError(
                "KC_API_KEYS and KC_ADMIN_KEYS are both empty: set at least one key "
                "(comma-separated; an admin key creates managed API keys)"
            )
        self.settings = settings
        self.registry = registry
        self.metrics_registry = metrics_registry
        self.metrics = FrontendMetrics.create(metrics_registry)
        self.keybook = KeyBook(settings)
        self.keys = KeyChecker(settings.api_keys, settings.admin_keys, self.keybook)
        self.usage = UsageBook(settings)
        self.accountant = Accountant(settings, registry, self.metrics, self.keybook)
        self.admissions = Admissions(settings)
        self.quota = Quota(self.keybook, self.usage, self.admissions, registry, self.metrics)
        self.publisher = Publisher(settings, "kc-frontend", linger_ms=0)
        self.replies = ReplyRouter(settings, self.metrics)
        configured = [s.name for s in registry if s.unavailable_reason(settings) is None]
        self.liveness = Liveness(settings, configured)
        self.streams = StreamRouter(settings, settings.reply_partition, self.replies.deliver_early)
        self.batches = BatchService(settings, registry)
        self.dispatcher = Dispatcher(settings, registry, self.batches.book, self.metrics)
        self.in_flight = 0
        self.started = int(time.time())  # `created` of the models in GET /v1/models
        self._background: set[asyncio.Task[None]] = set()
        self._started = False

    async def start(self) -> None:
        """Create the shared topics, connect, assign the reply partition, read liveness.

        Once: ``serve`` starts the gateway before uvicorn, whose lifespan then calls it again.
        """
        if self._started:
            return
        self._started = True
        await ensure_topics(self.settings, [])
        await self.publisher.start()
        topics = Topics(self.settings.topic_prefix)
        await self.replies.start(await self.publisher.partitions(topics.results))
        await self.streams.start()
        await self.liveness.start()
        await self.batches.start()
        await self.usage.start()
        await self.keybook.start()
        await self.accountant.start()
        await self.admissions.start()
        await self.dispatcher.start()

    async def stop(self) -> None:
        """Disconnect everything (the dispatch group first: another front end takes over)."""
        await self.dispatcher.stop()
        await self.admissions.stop()
        await self.accountant.stop()
        await self.keybook.stop()
        await self.usage.stop()
        await self.batches.stop()
        await self.liveness.stop()
        await self.streams.stop()
        await self.replies.stop()
        await self.publisher.stop()

    @property
    def ready(self) -> bool:
        """Ready once the reply partition is assigned and liveness has been read."""
        books = self.batches.book.ready and self.usage.ready and self.keybook.ready
        return self.replies.ready and self.liveness.ready and books

    def tasks_for(
        self,
        request_id: uuid.UUID,
        models: list[str],
        sampling: Sampling,
        key_id: str,
        *,
        prompts: list[str] | None = None,
        messages: tuple[ChatMessage, ...] | None = None,
        stream: bool = False,
        choices_per_prompt: int = 1,
    ) -> list[TaskMessage]:
        """One task per entry of ``models`` (choice index = position), due at the deadline.

        ``prompts``, when given, is parallel to ``models``; a chat request gives ``messages``;
        ``choices_per_prompt`` is OpenAI's ``n`` (each prompt's usage is counted once).
        """
        logs.request_id.set(str(request_id))
        if self.settings.tracing:
            names = ",".join(dict.fromkeys(models))
            tracing.annotate({"kc.request_id": str(request_id), "gen_ai.request.model": names})
        now = time.time()
        texts = prompts or [""] * len(models)
        return [
            TaskMessage(
                request_id=str(request_id),
                choice_index=i,
                model=model,
                prompt=texts[i],
                messages=messages,
                stream=stream,
                sampling=sampling,
                enqueued_at=now,
                deadline=now + self.settings.request_timeout_s,
                reply_partition=self.replies.partition,
                key_id=key_id,
                choices_per_prompt=choices_per_prompt if choices_per_prompt > 1 else None,
            )
            for i, model in enumerate(models)
        ]

    @contextlib.asynccontextmanager
    async def flight(self, tasks: list[TaskMessage], *, stream: bool) -> AsyncIterator[Flight]:
        """One request's lifecycle: admitted and counted, published, forgotten at the end.

        Streamed and full answers both go through here, so the in-flight count and gauge, the
        deadline and the cancellation of a request whose caller left cannot drift apart.
        """
        request_id = tasks[0].request_id
        state = self.streams.open(request_id) if stream else None
        pending = self.replies.expect(request_id, len(tasks))
        # One deadline for publishing and waiting: a broker that is down answers 503 by it.
        deadline = tasks[0].deadline or time.time() + self.settings.request_timeout_s
        flight = Flight(tasks, pending, deadline, state, time.perf_counter())
        self.in_flight += 1
        self.metrics.in_flight.inc()
        published = False
        try:
            await self.publisher.publish(tasks, timeout_s=deadline - time.time())
            published = True
            yield flight
        finally:
            if state is not None:
                self.streams.close(request_id)
            self.replies.forget(request_id)
            self.in_flight -= 1
            self.metrics.in_flight.dec()
            if published and not flight.settled:  # the caller left: stop the workers
                self.cancel_later(request_id)

    def settle(self, flight: Flight, results: dict[int, ResultMessage]) -> Settled:
        """The status and body of a flight's results, logged and measured once."""
        models = flight.models
        request_id = uuid.UUID(flight.tasks[0].request_id)
        status, answer = assemble(request_id, models, results, self.settings.request_timeout_s)
        self.observe(models, status, time.perf_counter() - flight.started)
        flight.settled = True
        return Settled(results, status, answer)

    async def run(self, tasks: list[TaskMessage]) -> Settled:
        """Publish the tasks of one request, wait for them until the deadline, settle."""
        async with self.flight(tasks, stream=False) as flight:
            return self.settle(flight, await flight.wait())

    def cancel_later(self, request_id: str) -> None:
        """Publish a cancellation without making the caller (who left) wait for it."""
        task = asyncio.create_task(self._cancel(request_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _cancel(self, request_id: str) -> None:
        try:
            await self.publisher.cancel(request_id)
        except KafkaError as exc:
            log.warning("could not publish the cancellation of %s: %r", request_id, exc)

    def observe(self, models: list[str], status: int, elapsed_s: float) -> None:
        """Log and count one answered request."""
        names = ",".join(models)
        log.info(
            "completion answered %d in %.0f ms (%s)",
            status,
            elapsed_s * 1000,
            names,
            extra={"status": status, "model": names},
        )
        for model in set(models):
            self.metrics.latency.labels(model).observe(elapsed_s)
            if status == 504:
                self.metrics.timeouts.labels(model).inc()

    def label(self, request: Request, models: list[str]) -> None:
        """Name the request's models for the request counter (see ``producer.frontend.guard``)."""
        # Only registry names become label values: a caller inventing model names must not
        # grow the metric without bound.
        request.state.models = sorted({m if m in self.registry else "unknown" for m in models})

    def check_room(self) -> None:
        """Refuse a request past KC_MAX_IN_FLIGHT with 429 and Retry-After."""
        # Bounded in-flight requests keep memory bounded under a burst: past the limit callers
        # are told to come back, instead of queueing without end.
        if self.in_flight < self.settings.max_in_flight:
            return
        self.metrics.rejected.labels("overloaded").inc()
        detail = ErrorDetail(
            type="rate_limit_error",
            code="overloaded",
            message=f"{self.in_flight} requests in flight (KC_MAX_IN_FLIGHT="
            f"{self.settings.max_in_flight}); retry after a second",
        )
        raise ApiError(detail, {"Retry-After": "1"})

    def check_models(self, names: list[str]) -> list[ModelSpec]:
        """The specs of the requested models, or one error naming every one that cannot serve."""
        problems: list[ModelError] = []
        specs = []
        for name in dict.fromkeys(names):
            try:
                spec = self.registry.get(name)
            except ModelError as exc:
                problems.append(exc)
                continue
            reason = spec.unavailable_reason(self.settings)
            if reason is None and self.liveness.members(name) == 0:
                reason = (
                    "no live worker serves it (start one: kafka-completions worker --model "
                    + name
                    + ")"
                )
            if reason:
                problems.append(ModelUnavailable(name, reason))
            specs.append(spec)
        if problems:
            raise model_errors(problems)
        return specs

    async def admit(self, key_id: str) -> None:
        """Refuse (429) a request past its key's tpm limit, budget or rpm limit; called last
        before publishing, as an admitted request takes a place of its key's minute."""
        await self.quota.admit(key_id)

    def price_batch(self, key_id: str) -> Pricing:
        """The key's quota for a batch it creates: its most cost, or a refusal (429)."""
        batches = self.batches.book.batches
        return lambda tokens: self.quota.check_batch(key_id, tokens, batches.values())

    def check_access(self, key_id: str, models: list[str]) -> None:
        """Refuse (403) a managed key the models of whose request it may not call."""
        # Static keys (KC_API_KEYS) have no record: they call every model.
        record = self.keybook.get(key_id)
        if record is None:
            return
        refused = [m for m in dict.fromkeys(models) if not record.allows(m)]
        if refused:
            raise ApiError(model_not_allowed(refused, record.models))
