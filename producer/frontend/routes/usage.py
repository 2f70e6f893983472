"""``/v1/organization/usage/completions`` and ``/v1/organization/costs``: OpenAI's Usage and
Costs APIs over the usage ledger (``producer.tenants.report`` builds the pages).

Both kinds of key call them: an API key's report covers its own key id and nothing else (asking
for other key ids gives nothing of them), an admin key's every key. Lists come as OpenAI's SDK
sends them (``group_by[]=model``) or repeated (``group_by=model``); an invalid parameter is a
400 naming it. Until the front end has read the ledger (start-up) the answer is a 503: a report
from a half-read ledger would undercount.
"""

import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.routing import APIRoute

from producer.frontend.auth import Auth, Caller, any_key
from producer.frontend.gateway import Gateway
from producer.refusals import ApiError
from producer.tenants.report import (
    LAST_TIME,
    CostsGroup,
    CostsPage,
    UsageGroup,
    UsagePage,
    Width,
    costs_limit,
    costs_page,
    period,
    usage_limit,
    usage_page,
    visible_keys,
)
from schemas.api import ErrorBody, ErrorDetail
from schemas.errors import ReportError

_DECLARED: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "page names no page this service gave"},
    503: {
        "model": ErrorBody,
        "description": "the front end is still reading the usage ledger (start-up)",
        "headers": {
            "Retry-After": {
                "description": "seconds to wait before retrying",
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            }
        },
    },
}
_TIME = Query(ge=0, le=LAST_TIME, description="Unix seconds")


class OpenAIQueryRoute(APIRoute):
    """A route reading its query as OpenAI's SDK writes it: a list as ``name[]=`` (an invalid
    parameter is a 400 naming it, as on every OpenAI route: ``producer.frontend.errors``)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The route's handler, with the query's list names unbracketed first."""
        handle = super().get_route_handler()

        async def handler(request: Request) -> Response:
            query = request.scope["query_string"]
            if b"[]" in query or b"%5B%5D" in query.upper():
                scope = {**request.scope, "query_string": _unbracketed(query)}
                request = Request(scope, request.receive)
            return await handle(request)

        return handler


def router(front: Gateway, authenticated: Auth) -> APIRouter:
    """The usage and costs routes over the front end's copy of the usage ledger."""
    routes = APIRouter(route_class=OpenAIQueryRoute)
    identified = any_key(front.keys)

    @routes.get("/v1/organization/usage/completions", response_model=UsagePage, responses=_DECLARED)
    async def usage_completions(
        caller: Annotated[Caller, Depends(identified)],
        start_time: Annotated[int, _TIME],
        end_time: Annotated[int | None, _TIME] = None,
        bucket_width: Width = "1d",
        group_by: Annotated[list[UsageGroup] | None, Query()] = None,
        api_key_ids: Annotated[list[str] | None, Query()] = None,
        models: Annotated[list[str] | None, Query()] = None,
        batch: bool | None = None,
        limit: Annotated[int | None, Query(ge=1, le=1440)] = None,
        page: str | None = None,
    ) -> UsagePage:
        _check_ready(front)
        with _refused():
            span = period(
                start_time, _end(end_time), bucket_width, usage_limit(bucket_width, limit), page
            )
            keys = visible_keys(caller.key_id, caller.admin, api_key_ids)
            chosen = front.usage.select(
                span.start, span.end, key_ids=keys, models=models, batch=batch
            )
            return usage_page(chosen, span, group_by or ())

    @routes.get("/v1/organization/costs", response_model=CostsPage, responses=_DECLARED)
    async def costs(
        caller: Annotated[Caller, Depends(identified)],
        start_time: Annotated[int, _TIME],
        end_time: Annotated[int | None, _TIME] = None,
        bucket_width: Literal["1d"] = "1d",
        group_by: Annotated[list[CostsGroup] | None, Query()] = None,
        api_key_ids: Annotated[list[str] | None, Query()] = None,
        line_items: Annotated[list[str] | None, Query()] = None,
        limit: Annotated[int | None, Query(ge=1, le=180)] = None,
        page: str | None = None,
    ) -> CostsPage:
        _check_ready(front)
        with _refused():
            span = period(start_time, _end(end_time), bucket_width, costs_limit(limit), page)
            keys = visible_keys(caller.key_id, caller.admin, api_key_ids)
            chosen = front.usage.select(span.start, span.end, key_ids=keys)
            return costs_page(chosen, span, group_by or (), line_items)

    return routes


def _end(end_time: int | None) -> int:
    # OpenAI's default: up to now.
    return int(time.time()) if end_time is None else end_time


def _check_ready(front: Gateway) -> None:
    if not front.usage.ready:
        detail = ErrorDetail(
            type="service_unavailable",
            code="kafka_unavailable",
            message="the usage ledger is still being read from Kafka; retry in a few seconds",
        )
        raise ApiError(detail, {"Retry-After": "5"})


@contextmanager
def _refused() -> Iterator[None]:
    """A report's refusal as OpenAI's 400 (an unknown page cursor: 404, it names no page)."""
    try:
        yield
    except ReportError as exc:
        if exc.param != "page":
            raise ApiError(_invalid(exc.param, exc.value, str(exc))) from exc
        detail = ErrorDetail(
            type="invalid_request_error",
            code="not_found",
            message=f"{exc}; pass the next_page of the previous answer",
            param=exc.param,
            value=exc.value,
        )
        raise ApiError(detail) from exc


def _invalid(param: str, value: Any, message: str) -> ErrorDetail:
    return ErrorDetail(
        type="invalid_request_error",
        code="invalid_request",
        message=message,
        param=param,
        value=value,
    )


def _unbracketed(query: bytes) -> bytes:
    # OpenAI's SDK sends lists as group_by[]=model&group_by[]=batch; FastAPI reads group_by=...
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    return urlencode([(name.removesuffix("[]"), value) for name, value in pairs]).encode()
