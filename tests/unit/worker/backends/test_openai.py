"""The OpenAI backend through the real SDK against the fake vendor: mapping, reasons, faults."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from pydantic import SecretStr

from schemas.errors import ConfigError
from schemas.registry import ModelSpec, load_registry
from schemas.settings import Settings
from schemas.wire import ChatMessage
from tests.fakes.vendor_server import (
    Reply,
    VendorServer,
    chat_answer,
    closed_port_url,
    openai_error,
    text_answer,
)
from tests.unit.factories import sampling, task, task_message
from worker.backend import create_backend
from worker.backends.openai import OpenAIBackend
from worker.task import Completion, Failure, Outcome, Task
from worker.vendor import RetryPolicy

KEY = "sk-unit-planted-7c1e9a4b"
FAST = RetryPolicy(max_retries=2, budget_s=5.0, base_s=0.01, cap_s=0.05)


@pytest.fixture(autouse=True)
async def _fresh(fresh_server: VendorServer) -> None:
    """Each test starts from a clean script (``server``: conftest, keyed by ``KEY``)."""


def _settings(server: VendorServer, key: str = KEY) -> Settings:
    return Settings(openai_api_key=SecretStr(key), openai_base_url=server.openai_url)


def _backend(
    server: VendorServer,
    name: str = "gpt-4",
    policy: RetryPolicy = FAST,
    key: str = KEY,
    **spec_changes: Any,
) -> OpenAIBackend:
    spec = load_registry().get(name).model_copy(update=spec_changes)
    return OpenAIBackend(spec, _settings(server, key), policy)


def _task(model: str = "gpt-4", **sampling_changes: Any) -> Task:
    return task(task_message(model=model, sampling=sampling(**sampling_changes)))


async def _one(backend: OpenAIBackend, t: Task | None = None) -> Outcome:
    try:
        [(_, outcome)] = [pair async for pair in backend.run([t or _task()])]
    finally:
        await backend.aclose()
    return outcome


async def test_chat_model_sends_every_parameter_and_the_prompt_as_one_user_message(
    server: VendorServer,
) -> None:
    t = _task(
        max_tokens=7,
        temperature=0.7,
        top_p=0.8,
        stop=(".", "!"),
        presence_penalty=0.5,
        frequency_penalty=-0.5,
    )
    outcome = await _one(_backend(server, "gpt-3.5-turbo-16k"), t)
    assert isinstance(outcome, Completion)
    [seen] = server.requests_to("/v1/chat/completions")
    assert seen.authorization == f"Bearer {KEY}"
    body = seen.body
    assert body["model"] == "gpt-3.5-turbo-16k"
    assert body["messages"] == [{"role": "user", "content": "Once upon a time"}]
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (7, 0.7, 0.8)
    assert (body["presence_penalty"], body["frequency_penalty"]) == (0.5, -0.5)
    assert (body["stop"], body["n"]) == ([".", "!"], 1)


@pytest.mark.parametrize("name", ["gpt-4", "text-davinci-001"])
async def test_a_chat_task_sends_its_messages(server: VendorServer, name: str) -> None:
    chat = (
        ChatMessage(role="developer", content="Be brief."),
        ChatMessage(role="user", content="Hi"),
    )
    await _one(_backend(server, name), task(task_message(model=name, messages=chat)))
    [seen] = server.seen
    if name == "gpt-4":
        assert seen.body["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ]
    else:
        assert seen.body["prompt"] == "system: Be brief.\nuser: Hi\nassistant:"


async def test_no_stop_key_is_sent_without_stop_sequences(server: VendorServer) -> None:
    await _one(_backend(server), _task(stop=()))
    [seen] = server.seen
    assert "stop" not in seen.body


async def test_text_davinci_goes_to_legacy_completions(server: VendorServer) -> None:
    t = _task("text-davinci-001", max_tokens=3, temperature=0.0)
    outcome = await _one(_backend(server, "text-davinci-001"), t)
    [seen] = server.seen
    assert seen.path == "/v1/completions"
    assert (seen.body["model"], seen.body["prompt"], seen.body["max_tokens"]) == (
        "text-davinci-001",
        "Once upon a time",
        3,
    )
    assert isinstance(outcome, Completion)
    assert (outcome.text, outcome.finish_reason) == ("Once upon a", "length")


async def test_usage_is_the_vendors(server: VendorServer) -> None:
    server.script(Reply(body=chat_answer("Hello there", "stop", 11, 2)))
    outcome = await _one(_backend(server))
    assert isinstance(outcome, Completion)
    assert (outcome.text, outcome.finish_reason) == ("Hello there", "stop")
    assert (outcome.prompt_tokens, outcome.completion_tokens) == (11, 2)
    assert outcome.prediction_time_ms >= 0


@pytest.mark.parametrize(
    ("vendor_reason", "ours"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("content_filter", "content_filter"),
        ("tool_calls", "stop"),
        ("function_call", "stop"),
    ],
)
async def test_finish_reasons_are_mapped(
    server: VendorServer, vendor_reason: str, ours: str
) -> None:
    server.script(Reply(body=chat_answer("some text", vendor_reason)))
    outcome = await _one(_backend(server))
    assert isinstance(outcome, Completion)
    assert outcome.finish_reason == ours


@pytest.mark.parametrize("api", ["chat", "completions"])
async def test_stop_sequences_are_enforced_when_the_server_ignores_them(
    server: VendorServer, api: str
) -> None:
    name = "gpt-4" if api == "chat" else "text-davinci-001"
    answer = chat_answer if api == "chat" else text_answer
    server.script(Reply(body=answer("It was dark. Then light.", "length", 3, 9)))
    outcome = await _one(_backend(server, name), _task(name, stop=(".",)))
    assert isinstance(outcome, Completion)
    assert (outcome.text, outcome.finish_reason) == ("It was dark", "stop")
    assert outcome.completion_tokens == 9  # what the vendor billed


async def test_a_missing_usage_counts_zero(server: VendorServer) -> None:
    answer = chat_answer("ok")
    del answer["usage"]
    server.script(Reply(body=answer))
    outcome = await _one(_backend(server))
    assert isinstance(outcome, Completion)
    assert (outcome.prompt_tokens, outcome.completion_tokens) == (0, 0)


@pytest.mark.parametrize(
    ("reply", "code", "words"),
    [
        (
            Reply(401, openai_error("Incorrect API key provided", code="invalid_api_key")),
            "unauthorized",
            "OpenAI rejected the API key for gpt-4 (HTTP 401); check OPENAI_API_KEY",
        ),
        (
            Reply(403, openai_error("not allowed for this project")),
            "unauthorized",
            "OpenAI refused gpt-4 to this API key (HTTP 403): not allowed for this project",
        ),
        (
            Reply(404, openai_error("The model `gpt-4` does not exist")),
            "invalid_request",
            "OpenAI does not serve the model 'gpt-4' of gpt-4 (HTTP 404)",
        ),
        (
            Reply(400, openai_error("max_tokens is too large")),
            "invalid_request",
            "OpenAI refused the request for gpt-4 (HTTP 400): max_tokens is too large",
        ),
        (
            Reply(422, b"unprocessable"),
            "invalid_request",
            "OpenAI refused the request for gpt-4 (HTTP 422): unprocessable",
        ),
        (
            Reply(429, openai_error("You exceeded your quota", code="insufficient_quota")),
            "rate_limited",
            "quota of the account is used up for gpt-4",
        ),
        (Reply(200, b'{"choices": [{"mess'), "backend_error", "a body that is not JSON"),
        (Reply(200, {"object": "list", "data": []}), "backend_error", "not a chat completion"),
    ],
    ids=["401", "403", "404", "400", "422", "quota", "not-json", "not-a-completion"],
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


async def test_500s_are_retried_with_backoff_until_an_answer(server: VendorServer) -> None:
    server.script(Reply(500, openai_error("boom")), Reply(502, b"bad gateway"))
    outcome = await _one(_backend(server))
    assert isinstance(outcome, Completion)
    assert len(server.seen) == 3


async def test_retries_are_bounded_in_count(server: VendorServer) -> None:
    server.script(*[Reply(500, openai_error("boom"))] * 5)
    outcome = await _one(_backend(server))
    assert isinstance(outcome, Failure)
    assert outcome.code == "backend_error"
    assert "OpenAI failed on gpt-4 (HTTP 500): boom" in outcome.message
    assert "gave up after 3 attempts" in outcome.message
    assert len(server.seen) == 3


async def test_retries_are_bounded_in_time(server: VendorServer) -> None:
    slow_policy = RetryPolicy(max_retries=10, budget_s=0.5, base_s=0.2, cap_s=0.2)
    server.script(*[Reply(503, openai_error("overloaded"))] * 10)
    started = time.monotonic()
    outcome = await _one(_backend(server, policy=slow_policy))
    assert time.monotonic() - started < 1.0
    assert isinstance(outcome, Failure)
    assert outcome.code == "unavailable"
    assert 2 <= len(server.seen) <= 5


async def test_retry_after_is_honoured_on_503(server: VendorServer) -> None:
    server.script(Reply(503, openai_error("busy"), {"Retry-After-Ms": "300"}))
    outcome = await _one(_backend(server))
    assert isinstance(outcome, Completion)
    first, second = server.seen
    assert second.at - first.at >= 0.3


async def test_429_throttles_the_model_and_holds_back_every_call(server: VendorServer) -> None:
    backend = _backend(server, max_concurrency=1)
    server.script(Reply(429, openai_error("slow down"), {"Retry-After-Ms": "400"}))
    tasks = [_task(), task(task_message(model="gpt-4", request_id="req-2"))]
    started = time.time()
    run = asyncio.create_task(_collect(backend, tasks))
    await server.until(lambda s: bool(s.seen))
    await asyncio.sleep(0.05)
    assert backend.throttled_until() >= started + 0.4
    pairs = await run
    await backend.aclose()
    assert all(isinstance(o, Completion) for _, o in pairs)
    first, *later = server.seen
    assert len(later) == 2
    assert all(s.at - first.at >= 0.4 for s in later)
    assert backend.throttled_until() < time.time()


async def test_429s_past_the_retry_bound_fail_as_rate_limited(server: VendorServer) -> None:
    server.script(*[Reply(429, openai_error("slow down"), {"Retry-After-Ms": "50"})] * 5)
    outcome = await _one(_backend(server))
    assert isinstance(outcome, Failure)
    assert outcome.code == "rate_limited"
    assert "OpenAI rate-limited gpt-4 (HTTP 429)" in outcome.message
    assert len(server.seen) == 3


async def test_a_slow_answer_times_out_and_is_retried(server: VendorServer) -> None:
    server.script(Reply(delay_s=1.0))
    outcome = await _one(_backend(server, timeout_s=0.3))
    assert isinstance(outcome, Completion)
    assert len(server.seen) == 2


async def test_a_timeout_with_no_retry_left_fails_as_unavailable(server: VendorServer) -> None:
    server.script(Reply(delay_s=1.0))
    policy = RetryPolicy(max_retries=0, budget_s=5)
    outcome = await _one(_backend(server, policy=policy, timeout_s=0.3))
    assert isinstance(outcome, Failure)
    assert outcome.code == "unavailable"
    assert "OpenAI did not answer gpt-4 within 0.3 s" in outcome.message


async def test_an_unreachable_server_fails_as_unavailable() -> None:
    url = closed_port_url()
    spec = load_registry().get("gpt-4")
    backend = OpenAIBackend(
        spec, Settings(openai_api_key=SecretStr(KEY), openai_base_url=url), FAST
    )
    outcome = await _one(backend)
    assert isinstance(outcome, Failure)
    assert outcome.code == "unavailable"
    assert f"cannot reach OpenAI at {url} for gpt-4" in outcome.message


async def test_concurrency_is_bounded_by_the_registry(server: VendorServer) -> None:
    backend = _backend(server, max_concurrency=2)
    assert backend.capacity == 2
    server.script(*[Reply(delay_s=0.2)] * 6)
    tasks = [task(task_message(model="gpt-4", request_id=f"r{i}")) for i in range(6)]
    pairs = await _collect(backend, tasks)
    await backend.aclose()
    assert len(pairs) == 6
    assert server.most_in_flight == 2


async def test_the_key_never_appears_in_messages_or_logs(
    server: VendorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "sk-wrong-planted-0d9f8e"
    outcome = await _one(_backend(server, key=wrong))  # the fake echoes the wrong key
    server.script(Reply(400, openai_error(f"bad request from key {KEY}")))
    echoed = await _one(_backend(server))
    assert isinstance(outcome, Failure) and isinstance(echoed, Failure)
    assert wrong not in outcome.message
    assert KEY not in echoed.message and "[redacted]" in echoed.message
    assert caplog.records, "DEBUG logging captured nothing: the check would prove nothing"
    assert wrong not in caplog.text and KEY not in caplog.text


async def test_a_task_past_its_deadline_is_not_sent(server: VendorServer) -> None:
    t = task(task_message(model="gpt-4", deadline=time.time() - 1))
    outcome = await _one(_backend(server), t)
    assert isinstance(outcome, Failure)
    assert outcome.code == "deadline_exceeded"
    assert not server.seen


async def test_the_registry_base_url_wins_over_the_setting(server: VendorServer) -> None:
    spec = load_registry().get("gpt-4").model_copy(update={"base_url": server.openai_url})
    settings = Settings(openai_api_key=SecretStr(KEY), openai_base_url=closed_port_url())
    outcome = await _one(OpenAIBackend(spec, settings, FAST))
    assert isinstance(outcome, Completion)


async def test_create_backend_builds_openai_and_needs_the_key(server: VendorServer) -> None:
    spec = load_registry().get("gpt-4")
    backend = await create_backend(spec, _settings(server))
    assert isinstance(backend, OpenAIBackend)
    assert backend.throttled_until() == 0.0
    await backend.aclose()
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIBackend(spec, Settings())


async def test_a_spec_without_a_vendor_model_sends_its_name(server: VendorServer) -> None:
    spec = ModelSpec(name="gpt-x", backend="openai", api_key_env="OPENAI_API_KEY")
    await _one(OpenAIBackend(spec, _settings(server), FAST), _task("gpt-x"))
    assert server.seen[0].body["model"] == "gpt-x"


async def _collect(backend: OpenAIBackend, tasks: list[Task]) -> list[tuple[Task, Outcome]]:
    return [pair async for pair in backend.run(tasks)]
