"""HTTP errors: every failure answers ``{"error": {...}}`` naming what was wrong.

What is refused and with which status is decided in ``producer.refusals`` (shared with the job
client, which has no web framework); this module turns those refusals, and FastAPI's own
errors, into JSON responses. Only the router's own answers (404 for no route, 405 with Allow)
keep the status Starlette gave them.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from producer.frontend.paths import Paths
from producer.refusals import ApiError, describe_validation, model_errors, status_of
from schemas.api import ErrorBody, ErrorDetail
from schemas.errors import BrokerUnavailable, ModelUnavailable


def error_response(
    status: int, detail: ErrorDetail, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The JSON response of an error."""
    body = ErrorBody(error=detail).model_dump(mode="json", exclude_none=True)
    return JSONResponse(body, status_code=status, headers=headers)


OPENAI_PATHS = ("/v1/completions", "/v1/chat/completions")
OPENAI_PREFIXES = ("/v1/files", "/v1/batches", "/v1/organization/")


def _status_for(request: Request, detail: ErrorDetail) -> int:
    path = request.url.path
    return status_of(detail.code, openai=path in OPENAI_PATHS or path.startswith(OPENAI_PREFIXES))


def install_handlers(app: FastAPI, paths: Paths) -> None:
    """Answer every error in the ErrorBody shape (``paths``: every route, for a 405's Allow)."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(_status_for(request, exc.detail), exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        _, detail = describe_validation(exc.errors())
        return error_response(_status_for(request, detail), detail)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI's answer to a body it cannot decode (bad UTF-8)
            detail = ErrorDetail(
                type="invalid_request_error",
                code="invalid_json",
                message=f"the body is not valid UTF-8 JSON ({exc.detail})",
            )
            return error_response(status_of(detail.code), detail)
        detail = ErrorDetail(type="http_error", code=str(exc.status_code), message=str(exc.detail))
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # The router names the methods of the first route of the path only; GET and POST of
            # /v1/files (and /v1/batches) are two routes.
            headers["Allow"] = ", ".join(sorted(paths.resolve(request.scope).allowed))
        return error_response(exc.status_code, detail, headers)

    @app.exception_handler(BrokerUnavailable)
    async def _broker(_: Request, exc: BrokerUnavailable) -> JSONResponse:
        detail = ErrorDetail(type="service_unavailable", code="kafka_unavailable", message=str(exc))
        return error_response(status_of(detail.code), detail, {"Retry-After": "5"})

    @app.exception_handler(ModelUnavailable)
    async def _model(_: Request, exc: ModelUnavailable) -> JSONResponse:
        api = model_errors([exc])
        return error_response(api.status, api.detail, api.headers)
