"""The official openai SDK, unchanged but for base_url and api_key, against our front end."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from schemas.registry import load_registry
from schemas.settings import Settings
from tests.conftest import API_KEY, make_settings
from tests.integration.harness import (
    LOCAL,
    ScriptedBackend,
    committed_results,
    echo_through,
    front_end,
    spec_body,
    wait_live,
    worker,
)
from worker.backends.echo import EchoBackend
from worker.task import Delta, Event, Task

pytestmark = [pytest.mark.kafka, pytest.mark.model]


_SETTINGS: dict[int, Settings] = {}


def http_settings(http: httpx.AsyncClient) -> Settings:
    """The settings of the stack behind a client of the module's fixture."""
    return _SETTINGS[id(http)]


@pytest.fixture(scope="module")
async def sdk(kafka_bootstrap: str) -> AsyncIterator[tuple[openai.AsyncOpenAI, httpx.AsyncClient]]:
    """A front end with echo and the local model, and an AsyncOpenAI client pointed at it."""
    settings = make_settings(kafka_bootstrap)
    async with worker(settings, LOCAL, "echo"), front_end(settings) as client:
        await wait_live(client, LOCAL, "echo")
        _SETTINGS[id(client)] = settings
        sdk = openai.AsyncOpenAI(base_url=f"{client.base_url}/v1", api_key=API_KEY, max_retries=0)
        yield sdk, client
        await sdk.close()


async def test_completions_with_n_and_a_string_stop(
    sdk: tuple[openai.AsyncOpenAI, httpx.AsyncClient],
) -> None:
    client, _ = sdk
    answer = await client.completions.create(
        model="echo", prompt="one two three", max_tokens=5, n=2, stop="three"
    )
    assert [c.index for c in answer.choices] == [0, 1]
    assert all(c.text == "one two " for c in answer.choices)
    assert all(c.finish_reason == "stop" for c in answer.choices)
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == 3  # counted once for the two choices
    assert answer.usage.completion_tokens == 4


async def test_chat_completion_on_the_local_model(
    sdk: tuple[openai.AsyncOpenAI, httpx.AsyncClient],
) -> None:
    client, _ = sdk
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "What colour is the sky?"},
    ]
    answer = await client.chat.completions.create(
        model=LOCAL,
        messages=messages,
        max_tokens=24,
        temperature=0,
    )
    choice = answer.choices[0]
    assert answer.object == "chat.completion"
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in {"stop", "length"}
    assert answer.usage is not None and answer.usage.completion_tokens <= 24
    # The system message reached the model through its chat template: the prompt is exactly
    # the template's rendering of both messages.
    assert answer.usage.prompt_tokens == _template_tokens(messages)


def _template_tokens(messages: list[ChatCompletionMessageParam]) -> int:
    from transformers import AutoTokenizer

    from schemas.registry import load_registry
    from tests.conftest import cache_dir
    from worker.weights import checkpoint_dir

    path = checkpoint_dir(load_registry().get(LOCAL), cache_dir())
    tokenizer = AutoTokenizer.from_pretrained(path)
    plain = [{"role": str(m["role"]), "content": str(m.get("content", ""))} for m in messages]
    text = tokenizer.apply_chat_template(plain, add_generation_prompt=True, tokenize=False)
    return len(tokenizer(text)["input_ids"])


async def test_sdk_errors_are_the_usual_classes(
    sdk: tuple[openai.AsyncOpenAI, httpx.AsyncClient],
) -> None:
    client, http = sdk
    bad_key = openai.AsyncOpenAI(base_url=str(client.base_url), api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await bad_key.completions.create(model="echo", prompt="x")
    await bad_key.close()
    with pytest.raises(openai.BadRequestError) as bad:
        await client.completions.create(model="echo", prompt="x", temperature=3.5)
    assert "temperature" in str(bad.value)
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(
            model="gpt-5", messages=[{"role": "user", "content": "x"}]
        )
    models = await client.models.list()
    assert {m.id for m in models.data} >= {LOCAL, "echo", "gpt-4"}
    assert all(m.object == "model" and m.owned_by and m.created > 0 for m in models.data)
    # The spec's own route still fans out beside the OpenAI ones.
    fan_out = await http.post("/v1/completion", json=spec_body(model=["echo", LOCAL], max_tokens=4))
    assert [c["model"] for c in fan_out.json()["choices"]] == ["echo", LOCAL]


async def test_streaming_relays_the_text_exactly_once(
    sdk: tuple[openai.AsyncOpenAI, httpx.AsyncClient],
) -> None:
    client, _ = sdk
    stream = await client.chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "alpha beta gamma"}],
        max_tokens=9,
        stream=True,
        stream_options={"include_usage": True},
    )
    deltas, finishes, usage = [], [], None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            deltas.append(choice.delta.content or "")
            finishes.append(choice.finish_reason)
    text = "".join(deltas)
    assert text == "user: alpha beta gamma assistant: user: alpha beta gamma"
    assert finishes[-1] == "length" and finishes.count("length") == 1
    assert usage is not None and usage.completion_tokens == 9


async def test_local_model_streams_tokens_as_generated(
    sdk: tuple[openai.AsyncOpenAI, httpx.AsyncClient],
) -> None:
    client, _ = sdk
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "Tell me about the sea."}
    ]
    whole = await client.chat.completions.create(
        model=LOCAL,
        messages=messages,
        max_tokens=32,
        temperature=0,
    )
    stream = await client.chat.completions.create(
        model=LOCAL,
        messages=messages,
        max_tokens=32,
        temperature=0,
        stream=True,
    )
    deltas = [
        c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content
    ]
    assert len(deltas) >= 5, f"the text came in {len(deltas)} chunks, not as it was generated"
    assert "".join(deltas) == whole.choices[0].message.content


async def test_a_caller_that_leaves_cancels_the_generation(
    sdk: tuple[openai.AsyncOpenAI, httpx.AsyncClient], kafka_bootstrap: str
) -> None:
    client, http = sdk
    stream = await client.chat.completions.create(
        model=LOCAL,
        messages=[{"role": "user", "content": "Write a very long story."}],
        max_tokens=2000,
        stream=True,
    )
    request_id = ""
    async for chunk in stream:
        request_id = chunk.id.removeprefix("chatcmpl-")
        if chunk.choices and chunk.choices[0].delta.content:
            break
    await stream.close()
    started = time.monotonic()
    settings = http_settings(http)
    outcome = None
    while outcome is None and time.monotonic() - started < 60:
        results = await committed_results(settings, idle_s=1.0)
        outcome = next((r for r in results if r.request_id == request_id), None)
    assert outcome is not None and outcome.error is not None, "the generation ran on"
    assert outcome.error.code == "cancelled"
    assert time.monotonic() - started < 30


async def test_completions_max_tokens_defaults_to_16(
    sdk: tuple[openai.AsyncOpenAI, httpx.AsyncClient],
) -> None:
    client, _ = sdk
    # echo answers exactly max_tokens tokens when no stop cuts it.
    answer = await client.completions.create(model="echo", prompt="one two three")
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 16
    assert len(answer.choices[0].text.split()) == 16
    assert answer.choices[0].finish_reason == "length"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("best_of", 2),
        ("functions", [{"name": "f", "parameters": {"type": "object"}}]),
        ("top_logprobs", 2),
        ("logprobs", 1),
    ],
)
@pytest.mark.parametrize("route", ["completions", "chat"])
async def test_unimplemented_features_are_refused_with_400(
    sdk: tuple[openai.AsyncOpenAI, httpx.AsyncClient], field: str, value: object, route: str
) -> None:
    _, http = sdk
    body: dict[str, object]
    if route == "completions":
        path, body = "/v1/completions", {"model": "echo", "prompt": "x"}
    else:
        path, body = "/v1/chat/completions", {"model": "echo", "messages": [USER_HI]}
    response = await http.post(path, json=body | {field: value})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert field in error["message"]
    # What is accepted instead: the same body without the field is served.
    assert (await http.post(path, json=body)).status_code == 200


USER_HI = {"role": "user", "content": "hi"}


@pytest.mark.parametrize("path", ["/v1/completion", "/v1/completions"])
async def test_at_most_16_stop_strings_over_http(
    sdk: tuple[openai.AsyncOpenAI, httpx.AsyncClient], path: str
) -> None:
    _, http = sdk
    sixteen = [f"zz{i}" for i in range(16)]  # a literal 16: docs/API.md's promise
    body = {"model": "echo", "prompt": "one two", "max_tokens": 3}
    served = await http.post(path, json=body | {"stop": sixteen})
    assert served.status_code == 200, served.text
    refused = await http.post(path, json=body | {"stop": [*sixteen, "zz16"]})
    assert refused.status_code in (400, 422), refused.text
    assert refused.json()["error"]["param"] == "stop"


async def _both_usages(
    http: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> tuple[dict[str, int], list[dict[str, int]]]:
    """The usage of the full answer, and the usage chunks of the streamed one."""
    full = await http.post(path, json=body)
    assert full.status_code == 200, full.text
    streamed = []
    asked = body | {"stream": True, "stream_options": {"include_usage": True}}
    async with http.stream("POST", path, json=asked) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: {") and (chunk := json.loads(line[6:])).get("usage"):
                streamed.append(chunk["usage"])
    return full.json()["usage"], streamed


@pytest.mark.parametrize(
    ("path", "body", "completion_tokens"),
    [
        # Two prompts of 3 and 2 words (echo counts words), two choices each: 5 prompt tokens.
        ("/v1/completions", {"prompt": ["one two three", "four five"], "max_tokens": 4}, 16),
        ("/v1/chat/completions", {"messages": [USER_HI], "max_tokens": 3}, 6),
    ],
)
async def test_streamed_and_full_answers_report_the_same_usage(
    sdk: tuple[openai.AsyncOpenAI, httpx.AsyncClient],
    path: str,
    body: dict[str, Any],
    completion_tokens: int,
) -> None:
    _, http = sdk
    full, streamed = await _both_usages(http, path, {"model": "echo", "n": 2, **body})
    assert full["completion_tokens"] == completion_tokens
    if "prompt" in body:
        assert full["prompt_tokens"] == 5  # each distinct prompt once, not once per choice
    assert streamed == [full]


class _Gated(ScriptedBackend):
    """Echo, but a streaming task waits after its first delta until the test opens the gate."""

    def __init__(self) -> None:
        self._echo = EchoBackend(load_registry().get("echo"))
        self.gate = asyncio.Event()

    async def run(self, tasks: Sequence[Task]) -> AsyncIterator[tuple[Task, Event]]:
        """Echo's events, held after the first delta of each streaming task."""
        async for task, event in self._echo.run(tasks):
            yield task, event
            if isinstance(event, Delta):
                await self.gate.wait()

    async def aclose(self) -> None:
        """Let a held stream finish."""
        self.gate.set()


@pytest.fixture(scope="module")
async def gated(kafka_bootstrap: str) -> AsyncIterator[tuple[httpx.AsyncClient, asyncio.Event]]:
    """A front end before an echo worker whose streams wait for the gate yielded beside it."""
    backend = _Gated()
    async with echo_through(make_settings(kafka_bootstrap), backend) as client:
        yield client, backend.gate


async def _in_flight(http: httpx.AsyncClient) -> float:
    exposition = (await http.get("/metrics")).text
    (family,) = [
        f for f in text_string_to_metric_families(exposition) if f.name == "kc_requests_in_flight"
    ]
    return float(family.samples[0].value)


async def test_a_stream_counts_in_flight_while_it_runs(
    gated: tuple[httpx.AsyncClient, asyncio.Event],
) -> None:
    http, gate = gated
    body = {"model": "echo", "prompt": "one two three", "max_tokens": 6, "stream": True}
    assert await _in_flight(http) == 0
    async with http.stream("POST", "/v1/completions", json=body) as response:
        lines = (line async for line in response.aiter_lines() if line.startswith("data: "))
        first = await anext(lines)
        assert '"text":"one"' in first
        assert await _in_flight(http) == 1  # the worker holds the rest of the text
        gate.set()
        rest = [line async for line in lines]
    assert rest[-1] == "data: [DONE]"
    assert await _in_flight(http) == 0
