"""One trace per request across both Kafka hops, as a tracing backend receives it.

The front end and an echo worker run as processes exporting to a real OTLP/HTTP receiver in
the test (``tests.integration.otlp``); each case reads the spans back by trace id and checks
which process made each span, its parent, and the attributes an operator filters on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from devstack import process

from schemas.settings import Settings
from schemas.topics import Topics
from schemas.wire import Sampling, TaskMessage, encode
from tests.conftest import API_KEY, make_settings
from tests.integration.harness import CLI, answers, process_env, send_raw
from tests.integration.otlp import Receiver, Span, otlp_receiver

pytestmark = [pytest.mark.kafka]
FRONT, WORKER = "kafka-completions-frontend", "kafka-completions-worker"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@dataclass(frozen=True)
class Stack:
    """The processes' settings, the front end's URL and the receiver they export to."""

    settings: Settings
    url: str
    receiver: Receiver

    @property
    def topics(self) -> Topics:
        return Topics(self.settings.topic_prefix)


@contextlib.contextmanager
def processes(settings: Settings, otel: dict[str, str], logs: Path) -> Iterator[str]:
    """An echo worker and a front end with ``otel`` variables, live; yields the front end's URL.

    They are stopped at the end; their logs are ``worker.log`` and ``front.log`` in ``logs``.
    """
    env = process_env(settings, **otel)
    port = process.free_port()
    children = [
        process.launch([*CLI, "worker", "--model", "echo"], env=env, log=logs / "worker.log"),
        process.launch([*CLI, "serve", "--port", str(port)], env=env, log=logs / "front.log"),
    ]
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_ready(lambda: answers(f"{url}/readyz"), children, "the front end", 120)
        process.wait_ready(lambda: _live(url, "echo"), children, "a live echo worker", 120)
        yield url
    finally:
        process.stop(*children)
    # Both ended on SIGTERM within process.stop's bound (uvicorn re-raises the signal): the
    # spans left at shutdown cost at most the exporter's timeout, not a hang.
    assert [c.returncode for c in children] == [0, -signal.SIGTERM]


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A front end and an echo worker, as processes, exporting spans to the test's receiver."""
    settings = make_settings(kafka_bootstrap)
    with otlp_receiver() as receiver:
        # Exported every 100 ms instead of every 5 s, so a test waits for spans briefly.
        otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        with processes(settings, otel, tmp_path_factory.mktemp("traces")) as url:
            yield Stack(settings, url, receiver)


def _live(url: str, model: str) -> bool:
    try:
        listed = httpx.get(f"{url}/v1/models", headers=AUTH, timeout=5).json()["data"]
    except httpx.HTTPError:
        return False
    return any(m["id"] == model and m["live_workers"] > 0 for m in listed)


def one(spans: list[Span], **match: object) -> Span:
    """The one span whose fields equal ``match`` (``attributes`` as a subset)."""
    wanted = match.pop("attributes", {})
    assert isinstance(wanted, dict)
    found = [
        s
        for s in spans
        if all(getattr(s, k) == v for k, v in match.items())
        and all(s.attributes.get(k) == v for k, v in wanted.items())
    ]
    assert len(found) == 1, f"{len(found)} spans match {match} {wanted}: {spans}"
    return found[0]


def worker_hop(
    trace: list[Span], parent: Span, results_topic: str, usage: dict[str, int] | None = None
) -> Span:
    """Check the worker's spans under ``parent`` (the task's sender); its result's send span.

    ``usage``: what the caller was told, which the generation span must say too.
    """
    queue = one(trace, service=WORKER, name="queue wait", parent_id=parent.span_id)
    assert queue.attributes["gen_ai.request.model"] == "echo"
    assert isinstance(queue.attributes["kc.queue_time_ms"], int)
    assert queue.attributes["kc.queue_time_ms"] >= 0
    assert queue.end_ns >= queue.start_ns
    generation = one(trace, service=WORKER, name="generate echo", parent_id=parent.span_id)
    tokens = generation.attributes["gen_ai.usage.input_tokens"]
    assert isinstance(tokens, int) and tokens >= 4  # "say hello to traces", maybe a role
    assert generation.attributes["gen_ai.usage.output_tokens"] == 3  # max_tokens, echoed
    if usage is not None:
        assert tokens == usage["prompt_tokens"]
    assert generation.start_ns >= queue.end_ns - 1_000_000  # clocks of one host, ms rounding
    sent = one(
        trace,
        service=WORKER,
        kind="producer",
        name=f"send {results_topic}",
        parent_id=parent.span_id,
    )
    assert sent.attributes["messaging.system"] == "kafka"
    return sent


def request_trace(
    stack: Stack, request_id: str, route: str, caller: tuple[str, str], usage: dict[str, int]
) -> None:
    """Check one HTTP request's trace: caller > server > send > worker > send > reply."""

    def complete(spans: list[Span]) -> bool:
        kinds = {(s.service, s.kind) for s in spans if s.trace_id == caller[0]}
        ends = {(FRONT, "server"), (FRONT, "consumer"), (WORKER, "producer")}
        return ends <= kinds

    done = stack.receiver.wait(complete, f"whole trace {caller[0]}")
    trace = [s for s in done if s.trace_id == caller[0]]
    assert {s.service for s in trace} == {FRONT, WORKER}
    assert not [s for s in done if s.name == "GET /readyz"]  # probes are not traced
    server = one(trace, service=FRONT, kind="server", name=f"POST {route}")
    assert server.parent_id == caller[1]  # the caller's traceparent is continued
    assert server.attributes["kc.request_id"] == request_id
    requests = stack.topics.requests("echo")
    send = one(trace, service=FRONT, kind="producer", name=f"send {requests}")
    assert send.parent_id == server.span_id
    assert send.attributes["messaging.kafka.message.key"] == request_id
    sent = worker_hop(trace, send, stack.topics.results, usage)
    reply = one(trace, service=FRONT, kind="consumer", parent_id=sent.span_id)
    assert reply.attributes["messaging.kafka.message.key"] == request_id
    assert reply.attributes["gen_ai.request.model"] == "echo"


def traceparent() -> tuple[str, str, str]:
    """A caller's trace id, span id and W3C ``traceparent`` header value (sampled)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


BODY = {"model": "echo", "max_tokens": 3}
PROMPT = "say hello to traces"


def echo_task(request_id: str) -> TaskMessage:
    """A task for echo as an outside producer writes it (no reply partition)."""
    sampling = Sampling(max_tokens=3, temperature=0.0, top_p=1.0)
    return TaskMessage(
        request_id=request_id,
        choice_index=0,
        model="echo",
        prompt=PROMPT,
        sampling=sampling,
        enqueued_at=time.time(),
    )


async def test_an_interactive_request_is_one_trace_across_both_kafka_hops(stack: Stack) -> None:
    trace_id, span_id, header = traceparent()
    async with httpx.AsyncClient(base_url=stack.url, headers=AUTH, timeout=60) as client:
        response = await client.post(
            "/v1/completion",
            json={**BODY, "model": ["echo"], "prompt": PROMPT},
            headers={"traceparent": header},
        )
    assert response.status_code == 200, response.text
    answer = response.json()
    request_trace(stack, answer["id"], "/v1/completion", (trace_id, span_id), answer["usage"])


async def test_a_streamed_chat_is_one_trace_across_both_kafka_hops(stack: Stack) -> None:
    trace_id, span_id, header = traceparent()
    body = {
        **BODY,
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with (
        httpx.AsyncClient(base_url=stack.url, headers=AUTH, timeout=60) as client,
        client.stream(
            "POST", "/v1/chat/completions", json=body, headers={"traceparent": header}
        ) as response,
    ):
        assert response.status_code == 200
        events = [line async for line in response.aiter_lines() if line.startswith("data: {")]
    chunks = [json.loads(e.removeprefix("data: ")) for e in events]
    request_id = chunks[0]["id"].removeprefix("chatcmpl-")
    usage = chunks[-1]["usage"]
    request_trace(stack, request_id, "/v1/chat/completions", (trace_id, span_id), usage)


async def test_each_batch_line_has_a_trace_linked_to_its_batch(stack: Stack) -> None:
    lines = [
        {
            "custom_id": f"line-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {**BODY, "messages": [{"role": "user", "content": PROMPT}]},
        }
        for i in range(2)
    ]
    content = "".join(json.dumps(line) + "\n" for line in lines).encode()
    async with httpx.AsyncClient(base_url=stack.url, headers=AUTH, timeout=60) as client:
        upload = await client.post(
            "/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}
        )
        assert upload.status_code == 200, upload.text
        created = await client.post(
            "/v1/batches",
            json={
                "input_file_id": upload.json()["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
        )
        assert created.status_code == 200, created.text
    batch_id = created.json()["id"]
    bulk = stack.topics.bulk("echo")
    results = stack.topics.batch_results(batch_id)

    def lines_answered(spans: list[Span]) -> bool:
        line_traces = {
            s.trace_id
            for s in spans
            if s.attributes.get("kc.batch_id") == batch_id and not s.parent_id
        }
        sends = [s for s in spans if s.service == WORKER and s.name == f"send {results}"]
        batch = [s for s in spans if s.name == "create batch"]
        created = batch and any(s.span_id == batch[0].parent_id for s in spans)
        return (
            bool(created) and len(line_traces) == 2 and {s.trace_id for s in sends} == line_traces
        )

    spans = stack.receiver.wait(lines_answered, f"both lines of {batch_id} answered")
    batch = one(spans, service=FRONT, name="create batch", attributes={"kc.batch_id": batch_id})
    server = one(spans, span_id=batch.parent_id)
    assert (server.kind, server.name) == ("server", "POST /v1/batches")
    line_spans = [
        s for s in spans if s.attributes.get("kc.batch_id") == batch_id and not s.parent_id
    ]
    assert {s.attributes["kc.custom_id"] for s in line_spans} == {"line-0", "line-1"}
    for line in line_spans:
        assert (line.service, line.kind, line.name) == (FRONT, "producer", f"send {bulk}")
        assert line.trace_id != batch.trace_id  # a trace per line ...
        assert line.links == ((batch.trace_id, batch.span_id),)  # ... linked to its batch
        trace = [s for s in spans if s.trace_id == line.trace_id]
        sent = worker_hop(trace, line, results)
        assert sent.status_code != 2  # not an error


def test_a_task_from_an_outside_producer_continues_its_trace(stack: Stack) -> None:
    kcat = shutil.which("kcat")
    assert kcat, "kcat is missing: scripts/install-tools.sh installs it"
    trace_id, span_id, header = traceparent()
    request_id = str(uuid.uuid4())
    task = echo_task(request_id)
    topic = stack.topics.requests("echo")
    command = [kcat, "-P", "-b", stack.settings.kafka_bootstrap, "-t", topic, "-k", request_id]
    command += ["-H", f"traceparent={header}"]
    subprocess.run(command, input=encode(task), check=True, timeout=60)
    spans = stack.receiver.wait(
        lambda spans: any(
            s.service == WORKER and s.trace_id == trace_id and s.kind == "producer" for s in spans
        ),
        f"the worker's spans in the outside trace {trace_id}",
    )
    trace = [s for s in spans if s.trace_id == trace_id]
    outside = Span(FRONT, "outside", "producer", trace_id, span_id, "", {}, (), 0, 0, 0)
    sent = worker_hop(trace, outside, stack.topics.results)
    assert sent.attributes["messaging.kafka.message.key"] == request_id
    assert {s.service for s in trace} == {WORKER}


async def test_an_unreachable_collector_neither_fails_nor_holds_up_requests(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = make_settings(kafka_bootstrap)
    nobody = f"http://127.0.0.1:{process.free_port()}"  # nothing listens there
    # An export in a request's path would wait out retries for the exporter's whole timeout.
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": nobody, "OTEL_EXPORTER_OTLP_TIMEOUT": "5"}
    otel["OTEL_BSP_SCHEDULE_DELAY"] = "100"
    with processes(settings, otel, tmp_path) as url:
        async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60) as client:
            for _ in range(10):
                started = time.monotonic()
                response = await client.post(
                    "/v1/completion", json={**BODY, "model": ["echo"], "prompt": PROMPT}
                )
                assert response.status_code == 200, response.text
                assert time.monotonic() - started < 3.0
                await asyncio.sleep(0.2)  # exports are tried (and fail) between the requests
    for log in ("worker.log", "front.log"):
        text = (tmp_path / log).read_text()
        assert "Traceback" not in text, text[-3000:]


async def test_a_task_without_a_traceparent_is_one_trace_rooted_at_its_queue_wait(
    stack: Stack,
) -> None:
    request_id = str(uuid.uuid4())
    task = echo_task(request_id)
    await send_raw(stack.settings, stack.topics.requests("echo"), [(encode(task), b"k")])

    def mine(spans: list[Span]) -> list[Span]:
        return [s for s in spans if s.attributes.get("kc.request_id") == request_id]

    spans = stack.receiver.wait(lambda s: len(mine(s)) == 3, f"the worker's spans of {request_id}")
    queue = one(mine(spans), name="queue wait", parent_id="")
    assert {s.trace_id for s in mine(spans)} == {queue.trace_id}
    assert [s.parent_id for s in mine(spans) if s is not queue] == [queue.span_id] * 2
