"""HTTP errors: every failure answers ``{"error": {...}}`` naming what was wrong.

Client mistakes are 4xx naming the field and the value; a model that cannot serve is 404
(unknown) or 503 (not configured, or no live worker) naming every such model and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from schemas.api import ErrorBody, ErrorDetail
from schemas.errors import BrokerUnavailable, ModelError, ModelUnavailable, UnknownModel

_SHOWN_VALUE_CHARS = 100


class ApiError(Exception):
    """An error answer decided by a route."""

    def __init__(
        self, status: int, detail: ErrorDetail, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail.message)
        self.status = status
        self.detail = detail
        self.headers = headers


def error_response(
    status: int, detail: ErrorDetail, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The JSON response of an error."""
    body = ErrorBody(error=detail).model_dump(mode="json", exclude_none=True)
    return JSONResponse(body, status_code=status, headers=headers)


def model_errors(errors: Sequence[ModelError]) -> ApiError:
    """One answer for every model of a request that cannot serve it."""
    unknown = [e for e in errors if isinstance(e, UnknownModel)]
    chosen: Sequence[ModelError] = unknown or errors
    status, code = (404, "model_not_found") if unknown else (503, "model_unavailable")
    message = "; ".join(f"{e.model}: {e.reason}" for e in chosen)
    detail = ErrorDetail(
        type="invalid_request_error" if unknown else "service_unavailable",
        code=code,
        message=message,
        param="model",
        models=[e.model for e in chosen],
    )
    return ApiError(status, detail, None if unknown else {"Retry-After": "5"})


def describe_validation(errors: Sequence[Any]) -> tuple[int, ErrorDetail]:
    """A 400 (body is not JSON) or 422 (a field is wrong) naming the fields and values."""
    if any(e.get("type") == "json_invalid" for e in errors):
        detail = ErrorDetail(
            type="invalid_request_error",
            code="invalid_json",
            message=f"the body is not valid JSON: {errors[0].get('ctx', {}).get('error', '')}",
        )
        return 400, detail
    by_field: dict[str, list[Any]] = {}
    for err in errors:
        path = [p for p in err["loc"][1:] if not _is_branch(p)]
        by_field.setdefault(".".join(str(p) for p in path) or "body", []).append(err)
    messages = [_field_message(field, errs) for field, errs in by_field.items()]
    field, errs = next(iter(by_field.items()))
    detail = ErrorDetail(
        type="invalid_request_error",
        code="invalid_value",
        message="; ".join(messages),
        param=field,
        value=_shown(errs[0].get("input")),
    )
    return 422, detail


def _field_message(field: str, errs: list[Any]) -> str:
    value = _shown(errs[0].get("input"))
    kind = errs[0].get("type")
    if kind == "extra_forbidden":
        return f"{field}: unknown field (got {value!r}); see API-SPEC for the accepted fields"
    if kind == "missing":
        return f"{field}: required"
    if field == "model" and len(errs) > 1:
        return f"model: must be a model name or a non-empty list of model names (got {value!r})"
    return f"{field}: {errs[0]['msg']} (got {value!r})"


def _is_branch(part: Any) -> bool:
    # pydantic names union branches in the location ("str", "list[...]"); callers don't care.
    return isinstance(part, str) and (
        part in {"str", "list", "int", "float"} or "[" in part or part.startswith("constrained-")
    )


def _shown(value: Any) -> Any:
    if isinstance(value, str) and len(value) > _SHOWN_VALUE_CHARS:
        return value[:_SHOWN_VALUE_CHARS] + "…"
    return value


OPENAI_PATHS = ("/v1/completions", "/v1/chat/completions")
OPENAI_PREFIXES = ("/v1/files", "/v1/batches")


def _status_for(request: Request, status: int) -> int:
    # OpenAI answers every invalid parameter with 400, and its SDK maps 400 to BadRequestError;
    # the spec route keeps 422 for a well-formed body with a bad field.
    path = request.url.path
    if status == 422 and (path in OPENAI_PATHS or path.startswith(OPENAI_PREFIXES)):
        return 400
    return status


def install_handlers(app: FastAPI) -> None:
    """Answer every error in the ErrorBody shape."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(_status_for(request, exc.status), exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, detail = describe_validation(exc.errors())
        return error_response(_status_for(request, status), detail)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI's answer to a body it cannot decode (bad UTF-8)
            detail = ErrorDetail(
                type="invalid_request_error",
                code="invalid_json",
                message=f"the body is not valid UTF-8 JSON ({exc.detail})",
            )
            return error_response(400, detail)
        detail = ErrorDetail(type="http_error", code=str(exc.status_code), message=str(exc.detail))
        return error_response(exc.status_code, detail, dict(exc.headers or {}))

    @app.exception_handler(BrokerUnavailable)
    async def _broker(_: Request, exc: BrokerUnavailable) -> JSONResponse:
        detail = ErrorDetail(type="service_unavailable", code="kafka_unavailable", message=str(exc))
        return error_response(503, detail, {"Retry-After": "5"})

    @app.exception_handler(ModelUnavailable)
    async def _model(_: Request, exc: ModelUnavailable) -> JSONResponse:
        api = model_errors([exc])
        return error_response(api.status, api.detail, api.headers)
