"""The front end's outermost layer: refuse bodies that are not JSON or too large, count answers.

A plain ASGI middleware: Starlette's ``@app.middleware("http")`` runs each request through
extra tasks and memory streams, which cost about a third of the front end's CPU at a thousand
requests a second. A route names the models of its request in ``request.state.models`` (the
``state`` dict of the ASGI scope), which labels the count.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producer.frontend.errors import error_response
from producer.frontend.paths import Paths
from producer.refusals import status_of
from schemas.api import ErrorDetail
from schemas.metrics import FrontendMetrics

UPLOAD_PATH = "/v1/files"  # the one route whose body is multipart (a batch file upload)


class Guard:
    """Checks the media type and size of POST bodies and counts every HTTP answer."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: FrontendMetrics,
        paths: Paths,
        max_body_bytes: int,
        max_upload_bytes: int | None = None,
    ) -> None:
        self._app = app
        self._metrics = metrics
        self._paths = paths
        self._limit = max_body_bytes
        self._upload_limit = max_upload_bytes or max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        status = 500  # what the client gets when the app raises

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refusal, receive = await self._check(scope, receive)
            if refusal is not None:
                await refusal(scope, receive, send_counted)
            else:
                await self._app(scope, receive, send_counted)
        finally:
            self._count(scope, status)

    def _count(self, scope: Scope, status: int) -> None:
        path: str = scope["path"]
        route = path if path.startswith("/v1/") else "other"
        state: MutableMapping[str, Any] = scope.get("state") or {}
        for model in state.get("models") or [""]:
            self._metrics.requests.labels(route, model, str(status)).inc()

    async def _check(self, scope: Scope, receive: Receive) -> tuple[ASGIApp | None, Receive]:
        """A 415 or 413 response for a POST that is refused, and the receive to go on with."""
        if scope["method"] != "POST" or not self._paths.resolve(scope).takes_body:
            # No body read (a cancel), or the router answers (404; 405 with every method in
            # Allow, from the same table: see errors.py): nothing to refuse here.
            return None, receive
        return await self._check_body(scope, receive)

    async def _check_body(self, scope: Scope, receive: Receive) -> tuple[ASGIApp | None, Receive]:
        """A 415 or 413 response for a POST body that is refused, and the receive to go on."""
        headers = dict(scope["headers"])
        media = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        upload = scope["path"] == UPLOAD_PATH
        expected = "multipart/form-data" if upload else "application/json"
        limit, setting = (
            (self._upload_limit, "KC_BATCH_MAX_BYTES")
            if upload
            else (self._limit, "KC_MAX_BODY_BYTES")
        )
        if media != expected:
            detail = ErrorDetail(
                type="invalid_request_error",
                code="unsupported_media_type",
                param="content-type",
                value=media or None,
                message=f"send the body as {expected} (got {media!r})",
            )
            return error_response(status_of(detail.code), detail), receive
        declared = headers.get(b"content-length", b"")
        if declared.isdigit():
            size = int(declared)
        else:  # chunked: read it (up to just past the limit) and hand it on
            size, receive = await _buffer(receive, limit)
        if size <= limit:
            return None, receive
        detail = ErrorDetail(
            type="invalid_request_error",
            code="body_too_large",
            value=size,
            message=f"the body is {size} bytes; the limit is {limit} bytes ({setting})",
        )
        return error_response(status_of(detail.code), detail), receive


async def _buffer(receive: Receive, limit: int) -> tuple[int, Receive]:
    """Read a body of unknown length until its end or past ``limit``; replay what was read."""
    messages: list[Message] = []
    size = 0
    while size <= limit:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break

    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    return size, replay
