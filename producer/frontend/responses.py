"""The answers each route may give, declared in the OpenAPI schema so that it tells the truth.

Routes declare their success bodies; the error answers come from shared places (the key check,
the body middleware, the exception handlers), so they are declared here, once, for every route
under ``/v1`` (a route added later gets them too): 401 for all, and for a POST the statuses of
body refusals, validation, models, overload and deadline. Every error has the ErrorBody shape.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute

from schemas.api import ErrorBody

_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before retrying",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    # A "model" here would be ignored: FastAPI reads it only when the route is built. The
    # reference resolves because /v1/completion declares ErrorBody (a unit test checks it).
    schema = {"$ref": f"#/components/schemas/{ErrorBody.__name__}"}
    answer: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        answer["headers"] = headers
    return answer


_EVERY_V1: dict[int | str, dict[str, Any]] = {
    401: _error(
        "missing or invalid API key",
        {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    ),
    # 400 and 404: a query parameter out of range, a file or batch id this key does not own.
    400: _error("a parameter is invalid"),
    404: _error("no such file, batch or model for this API key"),
    422: _error("a parameter is invalid"),
}
_V1_POST: dict[int | str, dict[str, Any]] = {
    400: _error("the body is not valid UTF-8 JSON"),
    403: _error("a managed API key outside its models (named in error.models)"),
    404: _error("an unknown model (named in error.models)"),
    413: _error("the body is over KC_MAX_BODY_BYTES"),
    415: _error("the body is not application/json"),
    422: _error("a field is out of range or unknown (named in error.param)"),
    429: _error(
        "too many requests in flight (KC_MAX_IN_FLIGHT), or a managed key past its rpm or tpm "
        "limit or its budget (error.code: overloaded, rate_limit_exceeded, insufficient_quota)",
        _RETRY_AFTER,
    ),
    503: _error("a model is not configured or has no live worker, or Kafka is down", _RETRY_AFTER),
    504: _error("the deadline passed (error.choices holds the choices that arrived)"),
}
_STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "with stream=true: server-sent events, ending with data: [DONE]",
        "content": {
            "text/event-stream": {
                "schema": {"type": "object", "properties": {"data": {"type": "string"}}}
            }
        },
    }
}
_OTHERS: dict[str, dict[int | str, dict[str, Any]]] = {
    "/v1/completions": _STREAM,
    "/v1/chat/completions": _STREAM,
    "/v1/batches/{batch_id}/cancel": {409: _error("the batch has already ended")},
    "DELETE /v1/files/{file_id}": {
        409: _error("a running batch still has lines of the file to hand out")
    },
    "/readyz": {
        503: {
            "description": "not ready yet (same body as 200)",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
    "/metrics": {
        200: {
            "description": "Prometheus text exposition",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
}


def declare_responses(router: APIRouter) -> None:
    """Add the shared error answers to the OpenAPI responses of every route of ``router``.

    Call it before ``include_router``: FastAPI keeps an included router whole (its routes are
    not in ``app.routes``), and builds the schema from the router's own routes.
    """
    for route in router.routes:
        if not isinstance(route, APIRoute):
            continue
        extra = dict(_OTHERS.get(route.path, {}))
        for method in sorted(route.methods or ()):
            extra |= _OTHERS.get(f"{method} {route.path}", {})
        if route.path.startswith("/v1/"):
            extra |= _EVERY_V1
            if "POST" in (route.methods or ()):
                extra |= _V1_POST
        for status, answer in extra.items():
            route.responses.setdefault(status, answer)
