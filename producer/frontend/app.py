"""The ASGI application of one front-end instance: the gateway, its lifespan, its routers.

The request path: the guard (body size, content type, request counter), authentication, the
route's validation (pydantic, spec ranges), the gateway (admission, per-model checks, tasks,
publish, wait), then the answer; see docs/architecture.md.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from prometheus_client import CollectorRegistry

from producer.frontend.auth import bearer_key
from producer.frontend.errors import install_handlers
from producer.frontend.gateway import Gateway
from producer.frontend.guard import Guard
from producer.frontend.paths import Paths
from producer.frontend.responses import declare_responses
from producer.frontend.routes import batches, completion, files, keys, openai, ops, usage
from schemas import tracing
from schemas.registry import Registry
from schemas.settings import Settings

_UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})
# A span records the query, and GET /key/info?key= may carry a key itself.
_UNTRACED_PREFIX = "/key/"


def create_app(
    settings: Settings, registry: Registry, metrics_registry: CollectorRegistry | None = None
) -> FastAPI:
    """The ASGI application of one front-end instance."""
    front = Gateway(settings, registry, metrics_registry or CollectorRegistry())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        shutdown_tracing = tracing.install(settings, "kafka-completions-frontend")
        try:
            await front.start()
            try:
                yield
            finally:
                await front.stop()
        finally:
            shutdown_tracing()

    # FastAPI's own telemetry makes the server span of each request (continuing a caller's
    # traceparent) once a tracer provider is installed, and nothing before; its metrics and
    # logs would repeat our Prometheus metrics and log lines, and a probe every few seconds
    # would fill the tracing backend with one-span traces.
    telemetry = TelemetryConfig(
        metrics=False,
        logs=False,
        operation_spans=False,
        auto_configure=False,
        exclude=lambda scope: (
            scope.get("path") in _UNTRACED or str(scope.get("path")).startswith(_UNTRACED_PREFIX)
        ),
    )
    app = FastAPI(
        title="kafka-completions", version="0.1.0", lifespan=lifespan, telemetry=telemetry
    )
    app.state.front = front
    authenticated = bearer_key(front.keys)
    every_route = list(app.routes)  # the document's own (/openapi.json, /docs)
    for family in (completion, ops, openai, files, batches, usage, keys):
        routes = family.router(front, authenticated)
        declare_responses(routes)
        app.include_router(routes)
        every_route.extend(routes.routes)
    paths = Paths(every_route)
    install_handlers(app, paths)
    app.add_middleware(
        Guard,
        metrics=front.metrics,
        paths=paths,
        max_body_bytes=settings.max_body_bytes,
        # An upload carries a whole batch file, plus the multipart framing.
        max_upload_bytes=settings.batch_max_bytes + 64 * 1024,
    )
    return app
