"""The Cohere backend through the real SDK against the fake vendor: ranges, reasons, faults."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from pydantic import SecretStr

from schemas.errors import ConfigError
from schemas.registry import load_registry
from schemas.settings import Settings
from schemas.wire import ChatMessage
from tests.fakes.vendor_server import Reply, VendorServer, cohere_answer, cohere_error
from tests.unit.factories import sampling, task, task_message
from worker.backend import create_backend
from worker.backends.cohere import CohereBackend, cohere_params
from worker.task import Completion, Failure, Outcome, Task
from worker.vendor import RetryPolicy

KEY = "co-unit-planted-51b7e2"
FAST = RetryPolicy(max_retries=2, budget_s=5.0, base_s=0.01, cap_s=0.05)


@pytest.fixture(autouse=True)
async def _fresh(fresh_server: VendorServer) -> None:
    """Each test starts from a clean script (``server``: conftest, keyed by ``KEY``)."""


def _backend(
    server: VendorServer, name: str = "cohere-command", key: str = KEY, **spec_changes: Any
) -> CohereBackend:
    spec = load_registry().get(name).model_copy(update=spec_changes)
    return CohereBackend(spec, Settings(co_api_key=SecretStr(key), co_api_url=server.url), FAST)


def _task(**sampling_changes: Any) -> Task:
    return task(task_message(model="cohere-command", sampling=sampling(**sampling_changes)))


async def _one(backend: CohereBackend, t: Task | None = None) -> Outcome:
    try:
        [(_, outcome)] = [pair async for pair in backend.run([t or _task()])]
    finally:
        await backend.aclose()
    return outcome


@pytest.mark.parametrize(
    ("top_p", "p"), [(1.0, 0.99), (0.0, 0.01), (0.5, 0.5), (0.995, 0.99), (0.001, 0.01)]
)
def test_top_p_is_clamped_to_cohere_p(top_p: float, p: float) -> None:
    params = cohere_params(sampling(top_p=top_p))
    assert isinstance(params, dict)
    assert params["p"] == p


@pytest.mark.parametrize(("spec_value", "cohere_value"), [(0.0, 0.0), (0.5, 0.25), (2.0, 1.0)])
def test_penalties_are_halved_onto_cohere_range(spec_value: float, cohere_value: float) -> None:
    params = cohere_params(sampling(presence_penalty=spec_value, frequency_penalty=spec_value))
    assert isinstance(params, dict)
    assert params["presence_penalty"] == params["frequency_penalty"] == cohere_value


@pytest.mark.parametrize("field", ["presence_penalty", "frequency_penalty"])
def test_a_negative_penalty_cannot_be_mapped(field: str) -> None:
    why = cohere_params(sampling(**{field: -0.5}))
    assert isinstance(why, str)
    assert why.startswith(f"{field}: ") and "(got -0.5)" in why


async def test_the_request_carries_every_mapped_parameter(server: VendorServer) -> None:
    t = _task(
        max_tokens=6,
        temperature=0.7,
        top_p=0.8,
        stop=(".", "!"),
        presence_penalty=0.5,
        frequency_penalty=1.5,
    )
    outcome = await _one(_backend(server, "cohere-command-light"), t)
    assert isinstance(outcome, Completion)
    [seen] = server.requests_to("/v2/chat")
    assert seen.authorization == f"Bearer {KEY}"
    body = seen.body
    assert body["model"] == "command-light"
    assert body["messages"] == [{"role": "user", "content": "Once upon a time"}]
    assert (body["max_tokens"], body["temperature"], body["p"]) == (6, 0.7, 0.8)
    assert (body["presence_penalty"], body["frequency_penalty"]) == (0.25, 0.75)
    assert body["stop_sequences"] == [".", "!"]
    assert body["stream"] is False


async def test_a_chat_task_sends_its_messages(server: VendorServer) -> None:
    chat = (
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", content="Hi"),
        ChatMessage(role="assistant", content="Hello"),
        ChatMessage(role="user", content="Again"),
    )
    await _one(_backend(server), task(task_message(model="cohere-command", messages=chat)))
    assert server.seen[0].body["messages"] == [{"role": m.role, "content": m.content} for m in chat]


async def test_no_stop_sequences_key_without_stops(server: VendorServer) -> None:
    await _one(_backend(server), _task(stop=()))
    assert "stop_sequences" not in server.seen[0].body


async def test_a_negative_penalty_fails_without_calling_cohere(server: VendorServer) -> None:
    outcome = await _one(_backend(server), _task(frequency_penalty=-1.0))
    assert isinstance(outcome, Failure)
    assert outcome.code == "invalid_request"
    assert "frequency_penalty" in outcome.message and "cohere-command" in outcome.message
    assert not server.seen


async def test_happy_path_text_usage_and_stop_enforced(server: VendorServer) -> None:
    server.script(Reply(body=cohere_answer("Two words. And more", "MAX_TOKENS", 12, 5)))
    outcome = await _one(_backend(server), _task(stop=(".",)))
    assert isinstance(outcome, Completion)
    assert (outcome.text, outcome.finish_reason) == ("Two words", "stop")
    assert (outcome.prompt_tokens, outcome.completion_tokens) == (12, 5)


async def test_billed_units_count_when_tokens_are_missing(server: VendorServer) -> None:
    answer = cohere_answer("ok", "COMPLETE", 8, 1)
    del answer["usage"]["tokens"]
    server.script(Reply(body=answer))
    outcome = await _one(_backend(server))
    assert isinstance(outcome, Completion)
    assert (outcome.prompt_tokens, outcome.completion_tokens) == (8, 1)


@pytest.mark.parametrize(
    ("vendor_reason", "ours"),
    [
        ("COMPLETE", "stop"),
        ("STOP_SEQUENCE", "stop"),
        ("MAX_TOKENS", "length"),
        ("TOOL_CALL", "stop"),
    ],
)
async def test_finish_reasons_are_mapped(
    server: VendorServer, vendor_reason: str, ours: str
) -> None:
    server.script(Reply(body=cohere_answer("text", vendor_reason)))
    outcome = await _one(_backend(server))
    assert isinstance(outcome, Completion)
    assert outcome.finish_reason == ours


async def test_an_error_finish_fails_and_a_timeout_finish_is_retried(server: VendorServer) -> None:
    server.script(Reply(body=cohere_answer("", "ERROR")))
    failed = await _one(_backend(server))
    assert isinstance(failed, Failure)
    assert (failed.code, len(server.seen)) == ("backend_error", 1)
    server.reset()
    server.script(Reply(body=cohere_answer("", "TIMEOUT")))
    retried = await _one(_backend(server))
    assert isinstance(retried, Completion)
    assert len(server.seen) == 2


@pytest.mark.parametrize(
    ("reply", "code", "words"),
    [
        (
            Reply(401, cohere_error("invalid api token")),
            "unauthorized",
            "Cohere rejected the API key for cohere-command (HTTP 401); check CO_API_KEY",
        ),
        (
            Reply(498, cohere_error("invalid api token")),
            "unauthorized",
            "Cohere rejected the API key for cohere-command (HTTP 498)",
        ),
        (
            Reply(400, cohere_error("invalid request: max_tokens too big")),
            "invalid_request",
            "Cohere refused the request for cohere-command (HTTP 400): invalid request: max_tokens",
        ),
        (
            Reply(404, cohere_error("model 'command' not found")),
            "invalid_request",
            "Cohere does not serve the model 'command' of cohere-command (HTTP 404)",
        ),
        (Reply(200, b'{"id": "x", "finish'), "backend_error", "a body that is not JSON"),
        (Reply(200, {"id": "x"}), "backend_error", "not a v2 chat response"),
    ],
    ids=["401", "498", "400", "404", "not-json", "not-a-chat-response"],
)
async def test_final_errors_are_clear_and_not_retried(
    server: VendorServer, reply: Reply, code: str, words: str
) -> None:
    server.script(reply)
    outcome = await _one(_backend(server))
    assert isinstance(outcome, Failure)
    assert outcome.code == code
    assert words in outcome.message
    assert len(server.seen) == 1


async def test_429_with_retry_after_throttles_then_succeeds(server: VendorServer) -> None:
    server.script(Reply(429, cohere_error("too many"), {"Retry-After": "1"}))
    backend = _backend(server)
    started = time.time()
    run = asyncio.create_task(_one(backend))
    await server.until(lambda s: bool(s.seen))
    await asyncio.sleep(0.05)
    assert backend.throttled_until() >= started + 1
    outcome = await run
    assert isinstance(outcome, Completion)
    first, second = server.seen
    assert second.at - first.at >= 1.0


@pytest.mark.parametrize("status", [500, 503, 504])
async def test_server_errors_are_retried_then_given_up(server: VendorServer, status: int) -> None:
    server.script(*[Reply(status, cohere_error("try later"))] * 3)
    outcome = await _one(_backend(server))
    assert isinstance(outcome, Failure)
    assert outcome.code == ("backend_error" if status == 500 else "unavailable")
    assert f"(HTTP {status}): try later; gave up after 3 attempts" in outcome.message
    assert len(server.seen) == 3


async def test_a_slow_answer_times_out_and_is_retried(server: VendorServer) -> None:
    server.script(Reply(delay_s=1.0))
    outcome = await _one(_backend(server, timeout_s=0.3))
    assert isinstance(outcome, Completion)
    assert len(server.seen) == 2


async def test_the_key_never_appears_in_messages_or_logs(
    server: VendorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "co-wrong-planted-66aa01"
    outcome = await _one(_backend(server, key=wrong))
    server.script(Reply(422, cohere_error(f"rejected for token {KEY}")))
    echoed = await _one(_backend(server))
    assert isinstance(outcome, Failure) and isinstance(echoed, Failure)
    assert wrong not in outcome.message
    assert KEY not in echoed.message and "[redacted]" in echoed.message
    assert caplog.records
    assert wrong not in caplog.text and KEY not in caplog.text


async def test_create_backend_builds_cohere_and_needs_the_key(server: VendorServer) -> None:
    spec = load_registry().get("cohere-command-nightly")
    settings = Settings(co_api_key=SecretStr(KEY), co_api_url=server.url)
    backend = await create_backend(spec, settings)
    assert isinstance(backend, CohereBackend)
    assert backend.capacity == spec.max_concurrency
    await backend.aclose()
    with pytest.raises(ConfigError, match="CO_API_KEY"):
        CohereBackend(spec, Settings(openai_api_key=SecretStr("sk-other")))
