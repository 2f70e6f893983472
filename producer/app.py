"""The HTTP front end: ``POST /v1/completion``, ``GET /v1/models``, health, readiness, metrics.

The request path: authenticate, validate (pydantic, spec ranges), resolve every model (unknown:
404; not configured or no live worker: 503 at once), register the futures, publish one task
per entry of ``model`` carrying this instance's reply partition and the deadline, and wait.
"""

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Annotated, Any

from aiokafka.errors import KafkaError
from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from producer.assemble import assemble
from producer.auth import KeyChecker
from producer.batch.service import BatchService
from producer.errors import ApiError, error_response, install_handlers, model_errors
from producer.frontend.routes import batches, files
from producer.guard import Guard
from producer.liveness import Liveness
from producer.openapi import declare_responses
from producer.params import check_params
from producer.publisher import Publisher
from producer.replies import ReplyRouter
from producer.streams import StreamRouter
from schemas import logs
from schemas.api import CompletionRequest, CompletionResponse, ErrorBody, ErrorDetail
from schemas.errors import ConfigError, ModelError, ModelUnavailable
from schemas.kafka import ensure_topics
from schemas.metrics import FrontendMetrics
from schemas.registry import ModelSpec, Registry
from schemas.settings import Settings
from schemas.topics import Topics
from schemas.wire import ChatMessage, ResultMessage, Sampling, TaskMessage

ROUTE = "/v1/completion"
log = logging.getLogger(__name__)


class FrontEnd:
    """Everything one front-end instance holds: clients, key checker, metrics."""

    def __init__(
        self, settings: Settings, registry: Registry, metrics_registry: CollectorRegistry
    ) -> None:
        if not settings.api_keys:
            raise ConfigError("KC_API_KEYS is empty: set at least one API key (comma-separated)")
        self.settings = settings
        self.registry = registry
        self.metrics_registry = metrics_registry
        self.metrics = FrontendMetrics.create(metrics_registry)
        self.keys = KeyChecker(settings.api_keys)
        self.publisher = Publisher(settings, "kc-frontend", linger_ms=0)
        self.replies = ReplyRouter(settings, self.metrics)
        configured = [s.name for s in registry if s.unavailable_reason(settings) is None]
        self.liveness = Liveness(settings, configured)
        self.streams = StreamRouter(settings, settings.reply_partition, self.replies.deliver_early)
        self.batches = BatchService(settings, registry)
        self.in_flight = 0
        self.started = int(time.time())  # `created` of the models in GET /v1/models
        self._background: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Create the shared topics, connect, assign the reply partition, read liveness."""
        await ensure_topics(self.settings, [])
        await self.publisher.start()
        topics = Topics(self.settings.topic_prefix)
        await self.replies.start(await self.publisher.partitions(topics.results))
        await self.streams.start()
        await self.liveness.start()
        await self.batches.start()

    async def stop(self) -> None:
        """Disconnect everything."""
        await self.batches.stop()
        await self.liveness.stop()
        await self.streams.stop()
        await self.replies.stop()
        await self.publisher.stop()

    @property
    def ready(self) -> bool:
        """Ready once the reply partition is assigned, liveness read and the batch book too."""
        return self.replies.ready and self.liveness.ready and self.batches.book.ready

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
    ) -> list[TaskMessage]:
        """One task per entry of ``models`` (choice index = position), due at the deadline.

        ``prompts``, when given, is parallel to ``models``; a chat request gives ``messages``.
        """
        logs.request_id.set(str(request_id))
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
            )
            for i, model in enumerate(models)
        ]

    async def run(self, tasks: list[TaskMessage]) -> dict[int, ResultMessage]:
        """Publish the tasks of one request and wait for their results until the deadline."""
        request_id = tasks[0].request_id
        pending = self.replies.expect(request_id, len(tasks))
        self.in_flight += 1
        self.metrics.in_flight.inc()
        try:
            # One deadline for both steps: a broker that is down answers 503 by it, not later.
            deadline = tasks[0].deadline or time.time() + self.settings.request_timeout_s
            await self.publisher.publish(tasks, timeout_s=deadline - time.time())
            return await pending.wait(max(0.0, deadline - time.time()))
        finally:
            self.replies.forget(request_id)
            self.in_flight -= 1
            self.metrics.in_flight.dec()

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
        """Name the request's models for the request counter (see ``producer.guard``)."""
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
        raise ApiError(429, detail, {"Retry-After": "1"})

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


def create_app(
    settings: Settings, registry: Registry, metrics_registry: CollectorRegistry | None = None
) -> FastAPI:
    """The ASGI application of one front-end instance."""
    front = FrontEnd(settings, registry, metrics_registry or CollectorRegistry())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await front.start()
        try:
            yield
        finally:
            await front.stop()

    app = FastAPI(title="kafka-completions", version="0.1.0", lifespan=lifespan)
    app.state.front = front
    app.add_middleware(
        Guard,
        metrics=front.metrics,
        max_body_bytes=settings.max_body_bytes,
        # An upload carries a whole batch file, plus the multipart framing.
        max_upload_bytes=settings.batch_max_bytes + 64 * 1024,
    )
    install_handlers(app)
    authenticated = _add_routes(app, front)
    from producer.openai_api import add_openai_routes  # it builds on this module

    add_openai_routes(app, front, authenticated)
    for family in (files, batches):
        routes = family.router(front, authenticated)
        declare_responses(routes)
        app.include_router(routes)
    declare_responses(app)
    return app


def _add_routes(app: FastAPI, front: FrontEnd) -> Callable[..., Coroutine[Any, Any, str]]:
    async def authenticated(authorization: Annotated[str | None, Header()] = None) -> str:
        key_id = front.keys.check(authorization)
        if key_id is None:
            detail = ErrorDetail(
                type="authentication_error",
                code="invalid_api_key",
                message="missing or invalid API key: send Authorization: Bearer <key>",
            )
            raise ApiError(401, detail, {"WWW-Authenticate": "Bearer"})
        return key_id

    @app.post(
        ROUTE,
        response_model=CompletionResponse,
        responses={
            401: {"model": ErrorBody},
            404: {"model": ErrorBody},
            422: {"model": ErrorBody},
            503: {"model": ErrorBody},
            504: {"model": ErrorBody},
        },
    )
    async def completion(
        body: CompletionRequest, request: Request, key_id: Annotated[str, Depends(authenticated)]
    ) -> Response:
        models = body.models
        front.label(request, models)
        front.check_room()
        specs = front.check_models(models)
        sampling = Sampling.of_request(body)
        check_params(sampling, specs)
        return await _complete(front, body, models, sampling, key_id)

    @app.get("/v1/models")
    async def list_models(_: Annotated[str, Depends(authenticated)]) -> dict[str, Any]:
        data = []
        for spec in front.registry:
            reason = spec.unavailable_reason(front.settings)
            data.append(
                {
                    "id": spec.name,
                    "object": "model",
                    "created": front.started,
                    "owned_by": spec.backend,
                    "backend": spec.backend,
                    "configured": reason is None,
                    "reason": reason,
                    "live_workers": front.liveness.members(spec.name),
                }
            )
        return {"object": "list", "data": data}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ready = front.ready
        body = {"ready": ready, "reply_partition": front.replies.partition}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(front.metrics_registry), media_type=CONTENT_TYPE_LATEST)

    return authenticated


async def _complete(
    front: FrontEnd, body: CompletionRequest, models: list[str], sampling: Sampling, key_id: str
) -> Response:
    started = time.perf_counter()
    request_id = uuid.uuid4()
    prompts = [body.prompt] * len(models)
    tasks = front.tasks_for(request_id, models, sampling, key_id, prompts=prompts)
    results = await front.run(tasks)
    status, answer = assemble(request_id, models, results, front.settings.request_timeout_s)
    front.observe(models, status, time.perf_counter() - started)
    if isinstance(answer, ErrorBody):
        return error_response(status, answer.error)
    return Response(answer.model_dump_json(), media_type="application/json")
