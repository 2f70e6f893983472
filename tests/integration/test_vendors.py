"""Vendor models through the whole pipeline: front end -> Kafka -> worker -> vendor -> back.

OpenAI models run against a real OpenAI-compatible server, ``transformers serve`` with the
converted SmolLM2 checkpoint (chat and legacy completions). Faults and Cohere run against the
fake vendor of ``tests.fakes.vendor_server``, which speaks both wire formats.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from schemas import clients
from schemas.registry import Registry, load_registry
from schemas.settings import Settings
from schemas.topics import Topics
from tests.conftest import cache_dir, make_settings
from tests.fakes.vendor_server import Reply, VendorServer, openai_error
from tests.integration.harness import (
    LOCAL,
    backend_worker,
    front_end,
    spec_body,
    transformers_serve,
    wait_live,
    worker,
)
from worker.backends.openai import OpenAIBackend
from worker.task import Delta, Outcome, Task
from worker.weights import checkpoint_dir

pytestmark = [pytest.mark.kafka, pytest.mark.vendor]

OPENAI = (
    "gpt-4",
    "gpt-4-0613",
    "gpt-4-0314",
    "gpt-4-32k",
    "gpt-4-32k-0613",
    "gpt-4-32k-0314",
    "gpt-3.5-turbo",
    "gpt-3.5-turbo-0613",
    "gpt-3.5-turbo-0301",
    "gpt-3.5-turbo-16k",
    "gpt-3.5-turbo-16k-0613",
    "text-davinci-001",
)
COHERE = ("cohere-command", "cohere-command-light", "cohere-command-nightly")
PLANTED = "sk-planted-kc-9b3e51f07a"
_SDK_LOGGERS = ("openai", "httpx", "httpx2", "httpcore", "cohere", "fern", "aiokafka", "worker")


@pytest.fixture(autouse=True)
def _no_key_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every log record of every logger, at DEBUG, must be free of the planted key."""
    caplog.set_level(logging.DEBUG)
    for name in _SDK_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    yield
    records = caplog.get_records("setup") + caplog.get_records("call")
    assert records, "nothing was logged: the key check would prove nothing"
    assert not [r for r in records if PLANTED in r.getMessage()]


def _vendor_settings(kafka_bootstrap: str, **update: Any) -> Settings:
    return make_settings(kafka_bootstrap, **update)


def _check_response(response: httpx.Response, models: Sequence[str], max_tokens: int) -> Any:
    assert response.status_code == 200, response.text
    body = response.json()
    uuid.UUID(body["id"])
    assert body["object"] == "text_completion"
    assert [c["model"] for c in body["choices"]] == list(models)
    for choice in body["choices"]:
        usage = choice["usage"]
        assert choice["finish_reason"] in {"stop", "length"}
        assert isinstance(choice["created"], int)
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= max_tokens
    for field in ("prompt_tokens", "completion_tokens", "total_tokens", "prediction_time_ms"):
        assert body["usage"][field] == sum(c["usage"][field] for c in body["choices"])
    return body


@pytest.fixture(scope="module")
def serve_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``transformers serve`` with the converted SmolLM2 under every OpenAI model id."""
    checkpoint = checkpoint_dir(load_registry().get(LOCAL), cache_dir())
    with transformers_serve(checkpoint, OPENAI, tmp_path_factory.mktemp("serve")) as url:
        yield url


def _serve_settings(kafka_bootstrap: str, url: str) -> Settings:
    # A loaded two-core machine runs the server, the local model and the broker at once.
    return _vendor_settings(
        kafka_bootstrap,
        openai_api_key=SecretStr(PLANTED),
        openai_base_url=url,
        request_timeout_s=240,
    )


async def test_spec_example_and_legacy_completions_on_transformers_serve(
    kafka_bootstrap: str, serve_url: str
) -> None:
    settings = _serve_settings(kafka_bootstrap, serve_url)
    models = ["gpt-4", "text-davinci-001", LOCAL]
    async with worker(settings, *models), front_end(settings) as client:
        await wait_live(client, *models)
        example = spec_body(model=["gpt-4", LOCAL], max_tokens=12)
        body = _check_response(
            await client.post("/v1/completion", json=example), example["model"], 12
        )
        legacy = spec_body(model="text-davinci-001", max_tokens=24, temperature=0)
        [choice] = _check_response(
            await client.post("/v1/completion", json=legacy), ["text-davinci-001"], 24
        )["choices"]
    assert all("." not in c["text"] for c in [*body["choices"], choice])


async def test_every_openai_model_on_transformers_serve(
    kafka_bootstrap: str, serve_url: str
) -> None:
    settings = _serve_settings(kafka_bootstrap, serve_url)
    async with worker(settings, *OPENAI), front_end(settings) as client:
        await wait_live(client, *OPENAI)
        every = spec_body(model=list(OPENAI), max_tokens=4, stop=None)
        _check_response(await client.post("/v1/completion", json=every), OPENAI, 4)


async def test_cohere_models_through_the_pipeline(kafka_bootstrap: str) -> None:
    with VendorServer(PLANTED) as fake:
        settings = _vendor_settings(
            kafka_bootstrap, co_api_key=SecretStr(PLANTED), co_api_url=fake.url
        )
        async with worker(settings, *COHERE), front_end(settings) as client:
            await wait_live(client, *COHERE)
            body = spec_body(
                prompt="It was dark. Then light", model=list(COHERE), max_tokens=9, top_p=1.0
            )
            body |= {"presence_penalty": 0.5, "frequency_penalty": 1.0}
            answer = _check_response(await client.post("/v1/completion", json=body), COHERE, 9)
    for choice in answer["choices"]:
        assert (choice["text"], choice["finish_reason"]) == ("It was dark", "stop")
        assert (choice["usage"]["prompt_tokens"], choice["usage"]["completion_tokens"]) == (5, 9)
    seen = fake.requests_to("/v2/chat")
    assert sorted(s.body["model"] for s in seen) == ["command", "command-light", "command-nightly"]
    for request in seen:
        assert request.authorization == f"Bearer {PLANTED}"
        assert (request.body["p"], request.body["temperature"]) == (0.99, 0.7)
        assert (request.body["presence_penalty"], request.body["frequency_penalty"]) == (0.25, 0.5)
        assert request.body["stop_sequences"] == ["."]


class _Spy:
    """The OpenAI backend, noting when the worker loop hands it each task."""

    def __init__(self, inner: OpenAIBackend) -> None:
        self.inner = inner
        self.handed: dict[str, float] = {}

    @property
    def capacity(self) -> int:
        return self.inner.capacity

    def throttled_until(self) -> float:
        return self.inner.throttled_until()

    def run(self, tasks: Sequence[Task]) -> AsyncIterator[tuple[Task, Outcome | Delta]]:
        self.handed |= {t.message.request_id: time.time() for t in tasks}
        return self.inner.run(tasks)

    def cancel(self, request_id: str) -> None:
        self.inner.cancel(request_id)

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class _Stack:
    client: httpx.AsyncClient
    settings: Settings
    fake: VendorServer
    spy: _Spy


@pytest.fixture(scope="module")
async def faults(kafka_bootstrap: str) -> AsyncIterator[_Stack]:
    """A front end and a gpt-4 worker whose vendor is the fake (shared by the fault tests)."""
    registry = Registry(
        [
            s.model_copy(update={"max_retries": 3, "retry_budget_s": 20, "timeout_s": 1.0})
            if s.name == "gpt-4"
            else s
            for s in load_registry()
        ]
    )
    with VendorServer(PLANTED) as fake:
        settings = _vendor_settings(
            kafka_bootstrap, openai_api_key=SecretStr(PLANTED), openai_base_url=fake.openai_url
        )
        spy = _Spy(OpenAIBackend(registry.get("gpt-4"), settings))
        try:
            async with (
                backend_worker(settings, registry.get("gpt-4"), spy),
                front_end(settings, registry) as client,
            ):
                await wait_live(client, "gpt-4")
                yield _Stack(client, settings, fake, spy)
        finally:
            await spy.aclose()


async def _ask(stack: _Stack) -> httpx.Response:
    return await stack.client.post("/v1/completion", json=spec_body(model="gpt-4", max_tokens=5))


async def test_429_pauses_the_model_and_honours_retry_after(faults: _Stack) -> None:
    faults.fake.reset()
    faults.fake.script(Reply(429, openai_error("Rate limit reached"), {"Retry-After": "2"}))
    first = asyncio.create_task(_ask(faults))
    await faults.fake.until(lambda s: bool(s.seen))
    limited_at = faults.fake.seen[0].at
    await asyncio.sleep(0.2)
    assert faults.spy.throttled_until() >= limited_at + 2.0 > time.time()
    second = asyncio.create_task(_ask(faults))
    answers = await asyncio.gather(first, second)
    assert [a.status_code for a in answers] == [200, 200], answers[1].text
    seen = faults.fake.seen
    assert len(seen) == 3, "one 429, then one call per task: no hot loop"
    assert all(s.at >= limited_at + 2.0 for s in seen[1:])
    second_id = str(answers[1].json()["id"])
    assert faults.spy.handed[second_id] >= limited_at + 1.9, "fetched while throttled"


async def test_500s_are_retried_then_fail_clearly(faults: _Stack) -> None:
    faults.fake.reset()
    faults.fake.script(*[Reply(500, openai_error("The server had an error"))] * 4)
    response = await _ask(faults)
    assert response.status_code == 502
    message = response.json()["error"]["message"]
    assert "OpenAI failed on gpt-4 (HTTP 500): The server had an error" in message
    assert "gave up after 4 attempts" in message
    assert len(faults.fake.seen) == 4


async def test_malformed_json_is_a_clear_error(faults: _Stack) -> None:
    faults.fake.reset()
    faults.fake.script(Reply(200, b'{"id": "chatcmpl-1", "choices": [{'))
    response = await _ask(faults)
    assert response.status_code == 502
    assert "OpenAI answered gpt-4 with a body that is not JSON" in response.text


async def test_slow_answers_time_out_and_503_retry_after_is_honoured(faults: _Stack) -> None:
    faults.fake.reset()
    faults.fake.script(Reply(delay_s=2.5), Reply(503, openai_error("busy"), {"Retry-After": "1"}))
    started = time.time()
    response = await _ask(faults)
    assert response.status_code == 200, response.text
    slow, busy, ok = faults.fake.seen
    assert busy.at - slow.at >= 1.0, "the slow call was cut at timeout_s"
    assert ok.at - busy.at >= 1.0, "Retry-After: 1 was honoured"
    assert time.time() - started < 10


async def test_a_rejected_key_is_clear_and_never_reaches_kafka(faults: _Stack) -> None:
    faults.fake.reset()
    echo = openai_error(f"Incorrect API key provided: {PLANTED}", code="invalid_api_key")
    faults.fake.script(Reply(401, echo))
    rejected = await _ask(faults)
    assert rejected.status_code == 502
    assert (
        "OpenAI rejected the API key for gpt-4 (HTTP 401); check OPENAI_API_KEY"
        in (rejected.json()["error"]["message"])
    )
    assert PLANTED not in rejected.text
    assert (await _ask(faults)).status_code == 200, "the worker keeps serving"
    assert len(faults.fake.seen) == 2
    topics = Topics(faults.settings.topic_prefix)
    values = await _raw_records(
        faults.settings, [topics.results, topics.dlq, topics.requests("gpt-4")]
    )
    assert any(b"OpenAI rejected the API key" in v for v in values)
    assert not any(PLANTED.encode() in v for v in values)


async def _raw_records(settings: Settings, topics: list[str]) -> list[bytes]:
    consumer = clients.consumer(settings, "kc-test-raw", *topics, auto_offset_reset="earliest")
    await consumer.start()
    values: list[bytes] = []
    try:
        while batch := await consumer.getmany(timeout_ms=2000):
            for records in batch.values():
                values += [(r.key or b"") + (r.value or b"") for r in records]
                values += [v for r in records for _, v in r.headers]
    finally:
        await consumer.stop()
    return values


async def test_a_server_pinned_to_one_model_serves_every_openai_name(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # `transformers serve CKPT` refuses any model name but its own: the backend asks the server
    # which model it serves and sends that, so gpt-4 and text-davinci-001 work against it.
    checkpoint = checkpoint_dir(load_registry().get(LOCAL), cache_dir())
    with transformers_serve(checkpoint, [], tmp_path, pinned=True) as url:
        settings = _serve_settings(kafka_bootstrap, url)
        async with worker(settings, "gpt-4", "text-davinci-001"), front_end(settings) as client:
            await wait_live(client, "gpt-4", "text-davinci-001")
            for model in ("gpt-4", "text-davinci-001"):
                body = spec_body(model=model, max_tokens=8)
                _check_response(await client.post("/v1/completion", json=body), [model], 8)
