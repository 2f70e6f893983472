"""The whole path: HTTP front end -> Kafka -> worker with the real SmolLM2 -> Kafka -> caller."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime

import httpx
import pytest

from schemas.settings import Settings
from schemas.topics import Topics
from schemas.wire import DLQ_REASON
from tests.conftest import make_settings
from tests.integration.harness import (
    LOCAL,
    dead_letters,
    front_end,
    send_raw,
    spec_body,
    wait_live,
    worker,
    worker_process,
)

pytestmark = [pytest.mark.kafka, pytest.mark.model]


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    """One front end and one worker (local model and echo) shared by this module's tests."""
    settings = make_settings(kafka_bootstrap)
    async with worker(settings, LOCAL, "echo"), front_end(settings) as client:
        await wait_live(client, LOCAL, "echo")
        yield client, settings


def _check_usage(usage: dict[str, int]) -> None:
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert all(isinstance(usage[k], int) for k in usage)


async def test_spec_example_on_the_local_model_twice(
    stack: tuple[httpx.AsyncClient, Settings],
) -> None:
    client, _ = stack
    response = await client.post("/v1/completion", json=spec_body())
    assert response.status_code == 200, response.text
    body = response.json()
    uuid.UUID(body["id"])
    datetime.fromisoformat(body["created"])
    assert body["object"] == "text_completion"
    assert [c["model"] for c in body["choices"]] == [LOCAL, LOCAL]
    for choice in body["choices"]:
        assert "." not in choice["text"]
        assert choice["text"].strip()
        assert isinstance(choice["created"], int)
        assert choice["finish_reason"] in {"stop", "length"}
        _check_usage(choice["usage"])
        assert choice["usage"]["completion_tokens"] in range(1, 51)
    for field in ("prompt_tokens", "completion_tokens", "total_tokens", "prediction_time_ms"):
        assert body["usage"][field] == sum(c["usage"][field] for c in body["choices"])


async def test_stop_sequence_cuts_the_text(stack: tuple[httpx.AsyncClient, Settings]) -> None:
    client, _ = stack
    free = await client.post(
        "/v1/completion", json=spec_body(model=LOCAL, temperature=0, stop=None, max_tokens=40)
    )
    assert free.status_code == 200, free.text
    text = free.json()["choices"][0]["text"]
    assert "." in text, "the greedy answer to this prompt has a sentence end; pick another prompt"
    stopped = await client.post(
        "/v1/completion", json=spec_body(model=LOCAL, temperature=0, stop=["."], max_tokens=40)
    )
    choice = stopped.json()["choices"][0]
    assert choice["text"] == text[: text.index(".")]
    assert choice["finish_reason"] == "stop"
    assert (
        choice["usage"]["completion_tokens"]
        < free.json()["choices"][0]["usage"]["completion_tokens"]
    )


async def test_temperature_zero_is_repeatable(stack: tuple[httpx.AsyncClient, Settings]) -> None:
    client, _ = stack
    body = spec_body(model=LOCAL, temperature=0, stop=None, max_tokens=24)
    first = (await client.post("/v1/completion", json=body)).json()["choices"][0]
    second = (await client.post("/v1/completion", json=body)).json()["choices"][0]
    assert first["text"] == second["text"]
    assert first["finish_reason"] == "length"
    assert first["usage"]["completion_tokens"] == 24


async def test_fan_out_keeps_choice_order(stack: tuple[httpx.AsyncClient, Settings]) -> None:
    client, _ = stack
    response = await client.post(
        "/v1/completion", json=spec_body(model=["echo", LOCAL, "echo"], max_tokens=8)
    )
    assert response.status_code == 200, response.text
    choices = response.json()["choices"]
    assert [c["model"] for c in choices] == ["echo", LOCAL, "echo"]
    assert choices[0]["text"] == choices[2]["text"] == "Once upon a time Once upon a time"


async def test_client_mistakes(stack: tuple[httpx.AsyncClient, Settings]) -> None:
    client, _ = stack
    no_key = await client.post("/v1/completion", json=spec_body(), headers={"Authorization": ""})
    assert no_key.status_code == 401
    assert no_key.json()["error"]["code"] == "invalid_api_key"
    for field, value in [
        ("temperature", 1.5),
        ("top_p", -0.1),
        ("presence_penalty", 2.5),
        ("frequency_penalty", -3),
        ("max_tokens", 0),
    ]:
        bad = await client.post("/v1/completion", json=spec_body(**{field: value}))
        assert bad.status_code == 422, (field, bad.text)
        error = bad.json()["error"]
        assert error["param"] == field and error["value"] == value
        assert field in error["message"]
    unknown = await client.post("/v1/completion", json=spec_body(model=[LOCAL, "gpt-5"]))
    assert unknown.status_code == 404
    assert unknown.json()["error"]["models"] == ["gpt-5"]


async def test_spec_example_names_unconfigured_models_fast(
    stack: tuple[httpx.AsyncClient, Settings],
) -> None:
    client, _ = stack
    started = time.monotonic()
    response = await client.post("/v1/completion", json=spec_body(model=["gpt-4", "llama-2-70b"]))
    assert time.monotonic() - started < 2
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["models"] == ["gpt-4", "llama-2-70b"]
    assert "OPENAI_API_KEY" in error["message"] and "llama-2-70b" in error["message"]


async def test_garbage_record_goes_to_the_dlq_and_the_worker_goes_on(
    stack: tuple[httpx.AsyncClient, Settings],
) -> None:
    client, settings = stack
    topics = Topics(settings.topic_prefix)
    garbage = (b"\xff\xfe not json", b"garbage-key")
    await send_raw(
        settings, topics.requests("echo"), [garbage, (b'{"v": 2, "request_id": "x"}', b"v2-key")]
    )
    records = await dead_letters(settings, 2)
    assert sorted(r.key for r in records) == [b"garbage-key", b"v2-key"]
    reasons = {r.key: dict(r.headers)[DLQ_REASON].decode() for r in records}
    assert "v" in reasons[b"v2-key"]
    after = await client.post("/v1/completion", json=spec_body(model="echo"))
    assert after.status_code == 200


async def test_no_live_worker_is_a_fast_503(settings: Settings) -> None:
    async with front_end(settings) as client:
        started = time.monotonic()
        response = await client.post("/v1/completion", json=spec_body(model=LOCAL))
        assert time.monotonic() - started < 2
    assert response.status_code == 503
    assert "no live worker" in response.json()["error"]["message"]


async def test_deadline_answers_504_with_the_choices_that_arrived(settings: Settings) -> None:
    # A worker frozen with SIGSTOP stays a group member until its session times out (10 s), so
    # the front end publishes to it and its choice can only miss the deadline; echo answers.
    short = settings.model_copy(update={"request_timeout_s": 1.5})
    frozen = worker_process(short, LOCAL)
    try:
        async with worker(short, "echo"), front_end(short) as client:
            await wait_live(client, LOCAL, "echo")
            frozen.send_signal(signal.SIGSTOP)
            started = time.monotonic()
            response = await client.post(
                "/v1/completion", json=spec_body(model=["echo", LOCAL], max_tokens=8)
            )
            elapsed = time.monotonic() - started
    finally:
        frozen.send_signal(signal.SIGCONT)
        frozen.terminate()
        frozen.wait(30)
    assert response.status_code == 504, response.text
    assert elapsed > 1.4, "answered before the deadline: the frozen worker was not waited for"
    assert elapsed < 5
    error = response.json()["error"]
    assert error["code"] == "deadline_exceeded"
    assert [c["model"] for c in error["choices"]] == ["echo"]
    assert [f["model"] for f in error["failures"]] == [LOCAL]
