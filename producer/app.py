"""The HTTP front end: ``POST /v1/completion``, ``GET /v1/models``, health, readiness, metrics.

The request path: authenticate, validate (pydantic, spec ranges), resolve every model (unknown:
404; not configured or no live worker: 503 at once), register the futures, publish one task
per entry of ``model`` carrying this instance's reply partition and the deadline, and wait.
"""

import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from producer.assemble import assemble
from producer.auth import KeyChecker
from producer.errors import ApiError, error_response, install_handlers, model_errors
from producer.liveness import Liveness
from producer.publisher import Publisher
from producer.replies import ReplyRouter
from schemas import logs
from schemas.api import CompletionRequest, CompletionResponse, ErrorBody, ErrorDetail
from schemas.errors import ConfigError, ModelError, ModelUnavailable
from schemas.kafka import ensure_topics
from schemas.metrics import FrontendMetrics
from schemas.registry import ModelSpec, Registry
from schemas.settings import Settings
from schemas.topics import Topics
from schemas.wire import Sampling, TaskMessage

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
        self.in_flight = 0

    async def start(self) -> None:
        """Create the shared topics, connect, assign the reply partition, read liveness."""
        await ensure_topics(self.settings, [])
        await self.publisher.start()
        topics = Topics(self.settings.topic_prefix)
        await self.replies.start(await self.publisher.partitions(topics.results))
        await self.liveness.start()

    async def stop(self) -> None:
        """Disconnect everything."""
        await self.liveness.stop()
        await self.replies.stop()
        await self.publisher.stop()

    @property
    def ready(self) -> bool:
        """Ready once the reply partition is assigned and liveness has been read."""
        return self.replies.ready and self.liveness.ready

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
    install_handlers(app)
    _add_routes(app, front)
    return app


def _add_routes(app: FastAPI, front: FrontEnd) -> None:
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

    @app.middleware("http")
    async def count(request: Request, call_next: Any) -> Response:
        refused = await _refuse_body(request, front.settings.max_body_bytes)
        response: Response = refused or await call_next(request)
        route = request.url.path if request.url.path.startswith("/v1/") else "other"
        for model in getattr(request.state, "models", None) or [""]:
            front.metrics.requests.labels(route, model, str(response.status_code)).inc()
        return response

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
        request.state.models = sorted(set(models))
        _check_room(front)
        specs = front.check_models(models)
        _check_stops(body, specs)
        return await _complete(front, body, models, key_id)

    @app.get("/v1/models")
    async def list_models(_: Annotated[str, Depends(authenticated)]) -> dict[str, Any]:
        data = []
        for spec in front.registry:
            reason = spec.unavailable_reason(front.settings)
            data.append(
                {
                    "id": spec.name,
                    "object": "model",
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


async def _refuse_body(request: Request, limit: int) -> Response | None:
    """415 for a body that is not JSON, 413 for one over the limit; None when acceptable."""
    if request.method != "POST":
        return None
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        detail = ErrorDetail(
            type="invalid_request_error",
            code="unsupported_media_type",
            param="content-type",
            value=media or None,
            message=f"send the body as application/json (got {media!r})",
        )
        return error_response(415, detail)
    declared = request.headers.get("content-length", "")
    size = int(declared) if declared.isdigit() else len(await request.body())
    if size <= limit:
        return None
    detail = ErrorDetail(
        type="invalid_request_error",
        code="body_too_large",
        value=size,
        message=f"the body is {size} bytes; the limit is {limit} bytes (KC_MAX_BODY_BYTES)",
    )
    return error_response(413, detail)


def _check_room(front: FrontEnd) -> None:
    # Bounded in-flight requests keep memory bounded under a burst: past the limit callers are
    # told to come back, instead of queueing without end.
    if front.in_flight < front.settings.max_in_flight:
        return
    front.metrics.rejected.labels("overloaded").inc()
    detail = ErrorDetail(
        type="rate_limit_error",
        code="overloaded",
        message=f"{front.in_flight} requests in flight (KC_MAX_IN_FLIGHT="
        f"{front.settings.max_in_flight}); retry after a second",
    )
    raise ApiError(429, detail, {"Retry-After": "1"})


def _check_stops(body: CompletionRequest, specs: list[ModelSpec]) -> None:
    count = len(body.stop or [])
    for spec in specs:
        if count > spec.max_stop_sequences:
            detail = ErrorDetail(
                type="invalid_request_error",
                code="invalid_value",
                param="stop",
                value=body.stop,
                message=f"stop: {spec.name} accepts at most {spec.max_stop_sequences} stop "
                f"sequences (got {count})",
            )
            raise ApiError(422, detail)


async def _complete(
    front: FrontEnd, body: CompletionRequest, models: list[str], key_id: str
) -> Response:
    started = time.perf_counter()
    settings = front.settings
    request_id = uuid.uuid4()
    logs.request_id.set(str(request_id))
    now = time.time()
    sampling = Sampling(
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=tuple(body.stop or ()),
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
    )
    tasks = [
        TaskMessage(
            request_id=str(request_id),
            choice_index=i,
            model=model,
            prompt=body.prompt,
            sampling=sampling,
            enqueued_at=now,
            deadline=now + settings.request_timeout_s,
            reply_partition=front.replies.partition,
            key_id=key_id,
        )
        for i, model in enumerate(models)
    ]
    pending = front.replies.expect(str(request_id), len(tasks))
    front.in_flight += 1
    front.metrics.in_flight.inc()
    try:
        await front.publisher.publish(tasks)
        results = await pending.wait(settings.request_timeout_s)
    finally:
        front.replies.forget(str(request_id))
        front.in_flight -= 1
        front.metrics.in_flight.dec()
    status, answer = assemble(request_id, models, results, settings.request_timeout_s)
    elapsed = time.perf_counter() - started
    log.info(
        "completion answered %d in %.0f ms (%s)",
        status,
        elapsed * 1000,
        ",".join(models),
        extra={"status": status, "model": ",".join(models)},
    )
    for model in set(models):
        front.metrics.latency.labels(model).observe(elapsed)
        if status == 504:
            front.metrics.timeouts.labels(model).inc()
    if isinstance(answer, ErrorBody):
        return error_response(status, answer.error)
    return Response(answer.model_dump_json(), media_type="application/json")
