"""Refusals: why a request (or a job line) cannot be served, and the HTTP status of every answer.

Client mistakes are 4xx naming the field and the value; a model that cannot serve is 404
(unknown) or 503 (not configured, or no live worker) naming every such model and why; a value a
model cannot serve (``schemas.limits``) is a 422. Which status an answer gets is decided here
and nowhere else: ``REFUSAL_STATUS`` by the error's code, ``FAILURE_STATUS`` by a choice's
failure, and OpenAI's dialect (400 for every invalid parameter) in ``status_of``. Nothing here
imports a web framework: the job client refuses job lines with the same words.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from schemas.api import ErrorDetail
from schemas.errors import ModelError, UnknownModel
from schemas.limits import Refusal, first_refusal
from schemas.registry import ModelSpec
from schemas.wire import Sampling

_SHOWN_VALUE_CHARS = 100
_SECRET_FIELDS = frozenset({"key", "keys", "new_key", "api_key", "token"})

# The status of each refusal, by its ErrorDetail code.
REFUSAL_STATUS = {
    "invalid_json": 400,
    "invalid_request": 400,  # a Batch API request (a file or batch that cannot be used so)
    "invalid_api_key": 401,
    "admin_key_required": 403,
    "model_not_allowed": 403,  # a managed key outside its models (OpenAI: PermissionDenied)
    "not_found": 404,
    "model_not_found": 404,
    "conflict": 409,
    "body_too_large": 413,
    "unsupported_media_type": 415,
    "invalid_value": 422,
    "overloaded": 429,
    "rate_limit_exceeded": 429,  # a managed key's rpm or tpm limit
    "insufficient_quota": 429,  # a managed key's budget
    "model_unavailable": 503,
    "kafka_unavailable": 503,
}
# The status of a request one of whose choices failed, by the failure's code (the most severe
# of a request's failures wins). A vendor refusing our key is our fault: 502, not 401.
FAILURE_STATUS = {
    "invalid_request": 400,
    "rate_limited": 429,
    "unauthorized": 502,
    "backend_error": 502,
    "unavailable": 503,
    "deadline_exceeded": 504,
}
# The routes speaking OpenAI's dialect answer every invalid parameter with 400 (its SDK maps 400
# to BadRequestError); the spec route keeps 422 for a well-formed body with a bad field.
_OPENAI_STATUS = {422: 400}


def status_of(code: str, *, openai: bool = False) -> int:
    """The HTTP status of a refusal with this code, in OpenAI's dialect when ``openai``."""
    status = REFUSAL_STATUS[code]
    return _OPENAI_STATUS.get(status, status) if openai else status


def failure_status(codes: Sequence[str]) -> int:
    """The status of a request whose choices failed with ``codes`` (the most severe wins)."""
    return max(FAILURE_STATUS.get(code, 502) for code in codes)


class ApiError(Exception):
    """A refusal decided by a route: its detail, and its status by the detail's code."""

    def __init__(self, detail: ErrorDetail, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail.message)
        self.status = status_of(detail.code)
        self.detail = detail
        self.headers = headers


def check_limits(sampling: Sampling, specs: list[ModelSpec]) -> None:
    """Raise a 422 for the first value one of the requested models cannot serve."""
    refusal = first_refusal(sampling, specs)
    if refusal is not None:
        raise ApiError(invalid_value(refusal))


def invalid_value(refusal: Refusal) -> ErrorDetail:
    """The error detail of a value a model cannot serve, naming the field and the value."""
    return ErrorDetail(
        type="invalid_request_error",
        code="invalid_value",
        param=refusal.field,
        value=refusal.value,
        message=refusal.message,
    )


def model_errors(errors: Sequence[ModelError]) -> ApiError:
    """One answer for every model of a request that cannot serve it."""
    unknown = [e for e in errors if isinstance(e, UnknownModel)]
    chosen: Sequence[ModelError] = unknown or errors
    code = "model_not_found" if unknown else "model_unavailable"
    message = "; ".join(f"{e.model}: {e.reason}" for e in chosen)
    detail = ErrorDetail(
        type="invalid_request_error" if unknown else "service_unavailable",
        code=code,
        message=message,
        param="model",
        models=[e.model for e in chosen],
    )
    return ApiError(detail, None if unknown else {"Retry-After": "5"})


def model_not_allowed(models: Sequence[str], allowed: Sequence[str]) -> ErrorDetail:
    """The error detail of a managed key asked for models outside its ``models``."""
    names = ", ".join(repr(m) for m in models)
    return ErrorDetail(
        type="permission_error",
        code="model_not_allowed",
        message=f"this API key may not call the model {names}: it may call "
        f"{', '.join(allowed)} (an admin changes that with POST /key/update)",
        param="model",
        models=list(models),
    )


def describe_validation(errors: Sequence[Any]) -> tuple[int, ErrorDetail]:
    """A 400 (body is not JSON) or 422 (a field is wrong) naming the fields and values."""
    if any(e.get("type") == "json_invalid" for e in errors):
        detail = ErrorDetail(
            type="invalid_request_error",
            code="invalid_json",
            message=f"the body is not valid JSON: {errors[0].get('ctx', {}).get('error', '')}",
        )
        return status_of(detail.code), detail
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
        value=None if _secret(field) else _shown(errs[0].get("input")),
    )
    return status_of(detail.code), detail


def _field_message(field: str, errs: list[Any]) -> str:
    value = _shown(errs[0].get("input"))
    kind = errs[0].get("type")
    if kind == "missing":
        return f"{field}: required"
    if _secret(field):
        return f"{field}: {errs[0]['msg']} (the value is not shown: it may be a key)"
    if kind == "extra_forbidden":
        return f"{field}: unknown field (got {value!r}); see /openapi.json for the accepted fields"
    if field == "model" and len(errs) > 1:
        return f"model: must be a model name or a non-empty list of model names (got {value!r})"
    return f"{field}: {errs[0]['msg']} (got {value!r})"


def _secret(field: str) -> bool:
    # A field that may hold an API key (the key-management routes) is never echoed back.
    return field.split(".")[0] in _SECRET_FIELDS


def _is_branch(part: Any) -> bool:
    # pydantic names union branches in the location ("str", "list[...]"); callers don't care.
    return isinstance(part, str) and (
        part in {"str", "list", "int", "float"} or "[" in part or part.startswith("constrained-")
    )


def _shown(value: Any) -> Any:
    if isinstance(value, str) and len(value) > _SHOWN_VALUE_CHARS:
        return value[:_SHOWN_VALUE_CHARS] + "…"
    return value
