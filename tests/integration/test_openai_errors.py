"""The OpenAI routes' 429, 503 and 504 in OpenAI's error shape, so the SDK raises its classes.

A worker whose backend never answers (it holds every task until the test ends) keeps the one
request a front end with ``KC_MAX_IN_FLIGHT=1`` holds waiting: a second is refused with 429,
the first runs into its deadline (504). A model without a live worker is a 503 at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import openai
import pytest

from schemas.settings import Settings
from tests.conftest import API_KEY, make_settings
from tests.integration.harness import (
    LOCAL,
    ScriptedBackend,
    echo_through,
)
from worker.task import Delta, Failure, Outcome, Task

pytestmark = [pytest.mark.kafka]
_DEADLINE_S = 2.0
_PATHS: dict[str, dict[str, Any]] = {
    "/v1/completions": {"prompt": "hello"},
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "hello"}]},
}


class _Stalled(ScriptedBackend):
    """A backend that takes tasks and answers none until it is closed."""

    def __init__(self) -> None:
        self._released = asyncio.Event()

    async def run(self, tasks: Sequence[Task]) -> AsyncIterator[tuple[Task, Outcome | Delta]]:
        await self._released.wait()
        for task in tasks:
            yield task, Failure("cancelled", "the test ended")

    async def aclose(self) -> None:
        self._released.set()


@pytest.fixture(scope="module")
async def stalled(kafka_bootstrap: str) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    """A front end holding one request at most, before an echo worker that never answers."""
    settings = make_settings(
        kafka_bootstrap, max_in_flight=1, request_timeout_s=_DEADLINE_S, drain_timeout_s=1
    )
    async with echo_through(settings, _Stalled()) as client:
        yield client, settings


def _openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """The error object of an answer in OpenAI's shape (message, type, code; param may be null)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and isinstance(error["code"], str)
    return error


@pytest.mark.parametrize("path", list(_PATHS))
async def test_429_past_the_in_flight_limit_and_504_at_the_deadline(
    stalled: tuple[httpx.AsyncClient, Settings], path: str
) -> None:
    client, _ = stalled
    body = {"model": "echo", "max_tokens": 4, **_PATHS[path]}
    started = time.monotonic()
    first = asyncio.create_task(client.post(path, json=body))
    await asyncio.sleep(0.5)  # the first is published and waits on the stalled worker
    assert not first.done()
    overloaded = await client.post(path, json=body)
    error = _openai_error(overloaded, 429)
    assert error["code"] == "overloaded"
    assert overloaded.headers["Retry-After"] == "1"
    late = await first
    elapsed = time.monotonic() - started
    error = _openai_error(late, 504)
    assert error["code"] == "deadline_exceeded"
    assert _DEADLINE_S - 0.1 < elapsed < _DEADLINE_S + 3


@pytest.mark.parametrize("path", list(_PATHS))
async def test_503_at_once_for_a_model_without_a_live_worker(
    stalled: tuple[httpx.AsyncClient, Settings], path: str
) -> None:
    client, _ = stalled
    started = time.monotonic()
    response = await client.post(path, json={"model": LOCAL, **_PATHS[path]})
    assert time.monotonic() - started < 1.5
    error = _openai_error(response, 503)
    assert "no live worker" in error["message"] and LOCAL in error["message"]
    assert "Retry-After" in response.headers


async def test_the_sdk_raises_its_own_classes_for_429_503_504(
    stalled: tuple[httpx.AsyncClient, Settings],
) -> None:
    client, _ = stalled
    sdk = openai.AsyncOpenAI(base_url=f"{client.base_url}/v1", api_key=API_KEY, max_retries=0)
    try:
        first = asyncio.create_task(sdk.completions.create(model="echo", prompt="x"))
        await asyncio.sleep(0.5)
        with pytest.raises(openai.RateLimitError) as limited:
            await sdk.completions.create(model="echo", prompt="x")
        assert limited.value.code == "overloaded"
        with pytest.raises(openai.InternalServerError) as late:
            await first
        assert late.value.status_code == 504 and late.value.code == "deadline_exceeded"
        with pytest.raises(openai.InternalServerError) as unavailable:
            await sdk.completions.create(model=LOCAL, prompt="x")
        assert unavailable.value.status_code == 503
    finally:
        await sdk.close()
