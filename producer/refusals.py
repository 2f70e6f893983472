"""Refusals: why a request (or a job line) cannot be served, decided before anything is published.

Client mistakes are 4xx naming the field and the value; a model that cannot serve is 404
(unknown) or 503 (not configured, or no live worker) naming every such model and why. Nothing
here imports a web framework: the job client refuses job lines with the same words.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from schemas.api import ErrorDetail
from schemas.errors import ModelError, UnknownModel

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
        return f"{field}: unknown field (got {value!r}); see /openapi.json for the accepted fields"
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
