"""The OpenAI Batch API with the official SDK (only base_url and api_key changed), on a real
broker, front end and workers."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import openai
import pytest
from openai.types import Batch
from pydantic import SecretStr

from producer.jobs.batch.output import batch_results
from producer.jobs.batch.store import CHUNK_BYTES
from schemas.registry import load_registry
from schemas.settings import Settings
from tests.conftest import API_KEY, make_settings
from tests.integration.harness import LOCAL, backend_worker, front_end, wait_live, worker
from worker.backends.echo import echo_text
from worker.task import Completion, Delta, Failure, Outcome, Task

pytestmark = [pytest.mark.kafka]
OTHER_KEY = "kc-test-other-key-91ab"


def chat_line(i: int, model: str = "echo", **body: Any) -> dict[str, Any]:
    """One input line of a chat batch, its prompt naming its number."""
    return {
        "custom_id": f"req-{i}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": model,
            "messages": [{"role": "user", "content": f"line {i} says hello"}],
            "max_tokens": 4,
        }
        | body,
    }


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


@pytest.fixture
async def stack(kafka_bootstrap: str) -> AsyncIterator[tuple[openai.AsyncOpenAI, Settings]]:
    """A front end (two keys) with an echo worker, and an SDK client of the first key."""
    settings = make_settings(kafka_bootstrap, api_keys=(SecretStr(API_KEY), SecretStr(OTHER_KEY)))
    async with worker(settings, "echo"), front_end(settings) as client:
        await wait_live(client, "echo")
        sdk = openai.AsyncOpenAI(base_url=f"{client.base_url}/v1", api_key=API_KEY, max_retries=0)
        yield sdk, settings
        await sdk.close()


async def until_done(sdk: openai.AsyncOpenAI, batch_id: str, timeout_s: float = 120) -> Batch:
    """Poll the batch until it ends."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = await sdk.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        await asyncio.sleep(0.2)
    raise TimeoutError(f"batch {batch_id} still {batch.status} after {timeout_s} s")


async def until_counted(sdk: openai.AsyncOpenAI, batch_id: str, completed: int) -> Batch:
    """Poll the batch until at least ``completed`` lines are answered."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        batch = await sdk.batches.retrieve(batch_id)
        if batch.request_counts is not None and batch.request_counts.completed >= completed:
            return batch
        await asyncio.sleep(0.1)
    raise TimeoutError(f"batch {batch_id}: fewer than {completed} lines answered")


async def lines_of(sdk: openai.AsyncOpenAI, file_id: str) -> list[dict[str, Any]]:
    content = await sdk.files.content(file_id)
    return [json.loads(t) for t in content.text.splitlines()]


async def test_a_chat_batch_runs_to_completed_with_one_line_per_custom_id(
    stack: tuple[openai.AsyncOpenAI, Settings],
) -> None:
    sdk, _ = stack
    upload = await sdk.files.create(
        file=("in.jsonl", io.BytesIO(jsonl([chat_line(i) for i in range(200)]))), purpose="batch"
    )
    assert upload.purpose == "batch" and upload.bytes > 0
    created = await sdk.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"team": "nlp"},
    )
    assert created.status == "in_progress" and created.request_counts is not None
    assert created.request_counts.total == 200
    done = await until_done(sdk, created.id)
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (200, 0)
    assert done.completed_at and done.in_progress_at and done.metadata == {"team": "nlp"}
    assert done.output_file_id and done.error_file_id is None
    lines = await lines_of(sdk, done.output_file_id)
    assert sorted(line["custom_id"] for line in lines) == sorted(f"req-{i}" for i in range(200))
    for line in lines:
        i = int(line["custom_id"].removeprefix("req-"))
        body = line["response"]["body"]
        assert line["response"]["status_code"] == 200 and line["error"] is None
        assert body["object"] == "chat.completion"
        assert body["usage"]["completion_tokens"] == 4
        assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 4
        prompt = f"user: line {i} says hello\nassistant:"
        assert body["choices"][0]["message"]["content"] == echo_text(prompt, 4)
    meta = await sdk.files.retrieve(done.output_file_id)
    assert meta.purpose == "batch_output"
    assert meta.bytes == len((await sdk.files.content(done.output_file_id)).content)
    listed = [b.id async for b in sdk.batches.list(limit=10)]
    assert listed == [created.id]


async def test_a_completions_line_reports_the_usage_its_route_reports(
    stack: tuple[openai.AsyncOpenAI, Settings],
) -> None:
    # Two prompts of different lengths and n=2: each prompt is counted once, as OpenAI does.
    sdk, _ = stack
    body: dict[str, Any] = {
        "model": "echo",
        "prompt": ["one two three four", "five six"],
        "n": 2,
        "max_tokens": 3,
    }
    routed = await sdk.completions.create(**body)
    line = {"custom_id": "n2", "method": "POST", "url": "/v1/completions", "body": body}
    upload = await sdk.files.create(file=("n2.jsonl", io.BytesIO(jsonl([line]))), purpose="batch")
    created = await sdk.batches.create(
        input_file_id=upload.id, endpoint="/v1/completions", completion_window="24h"
    )
    done = await until_done(sdk, created.id)
    assert done.output_file_id is not None, done
    (answer,) = await lines_of(sdk, done.output_file_id)
    assert routed.usage is not None
    assert answer["response"]["body"]["usage"] == routed.usage.model_dump(exclude_none=True)
    assert routed.usage.completion_tokens == 12


async def test_another_key_gets_404_for_files_and_batches(
    stack: tuple[openai.AsyncOpenAI, Settings],
) -> None:
    sdk, _ = stack
    upload = await sdk.files.create(
        file=("in.jsonl", io.BytesIO(jsonl([chat_line(0)]))), purpose="batch"
    )
    batch = await sdk.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    other = sdk.with_options(api_key=OTHER_KEY)
    with pytest.raises(openai.NotFoundError):
        await other.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        await other.files.retrieve(upload.id)
    with pytest.raises(openai.NotFoundError):
        await other.files.content(upload.id)
    with pytest.raises(openai.NotFoundError):
        await other.batches.cancel(batch.id)
    with pytest.raises(openai.NotFoundError):
        await other.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert [b.id async for b in other.batches.list()] == []
    assert [f.id async for f in other.files.list()] == []
    assert (await sdk.files.retrieve(upload.id)).id == upload.id


async def test_a_bad_file_is_refused_with_line_numbers_and_nothing_is_stored(
    stack: tuple[openai.AsyncOpenAI, Settings],
) -> None:
    sdk, _ = stack
    lines = [chat_line(i) for i in range(5)]
    lines[1]["body"]["temperature"] = 3.5
    lines[3]["custom_id"] = "req-0"
    lines[4]["body"]["model"] = "no-such-model"
    raw = jsonl(lines).replace(b'"req-2"', b'"req-2", oops', 1)
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk.files.create(file=("bad.jsonl", io.BytesIO(raw)), purpose="batch")
    message = str(refused.value)
    assert "line 2: body.temperature" in message
    assert "line 3: not valid JSON" in message
    assert "line 4: custom_id 'req-0' is already used by line 1" in message
    assert "line 5: body.model: no-such-model" in message
    assert "line 1:" not in message
    assert [f.id async for f in sdk.files.list()] == []


async def test_an_endpoint_mismatch_fails_the_batch_with_errors_per_line(
    stack: tuple[openai.AsyncOpenAI, Settings],
) -> None:
    sdk, _ = stack
    upload = await sdk.files.create(
        file=("in.jsonl", io.BytesIO(jsonl([chat_line(0), chat_line(1)]))), purpose="batch"
    )
    batch = await sdk.batches.create(
        input_file_id=upload.id, endpoint="/v1/completions", completion_window="24h"
    )
    assert batch.status == "failed" and batch.failed_at
    assert batch.errors is not None and batch.errors.data is not None
    assert [(e.line, e.code) for e in batch.errors.data] == [
        (1, "invalid_request"),
        (2, "invalid_request"),
    ]
    assert "differs from the batch's endpoint" in (batch.errors.data[0].message or "")
    assert (await sdk.batches.retrieve(batch.id)).status == "failed"


async def test_files_list_retrieve_content_and_delete(
    stack: tuple[openai.AsyncOpenAI, Settings],
) -> None:
    sdk, _ = stack
    raw = jsonl([chat_line(i) for i in range(3)])
    upload = await sdk.files.create(file=("three.jsonl", io.BytesIO(raw)), purpose="batch")
    assert (upload.filename, upload.bytes, upload.object) == ("three.jsonl", len(raw), "file")
    assert (await sdk.files.content(upload.id)).content == raw
    assert [f.id async for f in sdk.files.list()] == [upload.id]
    deleted = await sdk.files.delete(upload.id)
    assert deleted.deleted and deleted.id == upload.id
    with pytest.raises(openai.NotFoundError):
        await sdk.files.retrieve(upload.id)
    with pytest.raises(openai.BadRequestError):
        await sdk.files.create(file=("x.jsonl", io.BytesIO(raw)), purpose="fine-tune")


class Scripted:
    """A backend that fails every task, or answers one task per ``pace_s`` (to cancel midway)."""

    def __init__(self, *, fail: bool = False, pace_s: float = 0.0) -> None:
        self._fail = fail
        self._pace_s = pace_s
        self.ran = 0

    @property
    def capacity(self) -> int:
        return 8

    def throttled_until(self) -> float:
        return 0.0

    async def run(self, tasks: Sequence[Task]) -> AsyncIterator[tuple[Task, Outcome | Delta]]:
        for task in tasks:
            await asyncio.sleep(self._pace_s)
            self.ran += 1
            if self._fail:
                yield task, Failure("backend_error", "the scripted backend fails every task")
            else:
                yield task, Completion("ok", "stop", 1, 1, 1)

    def cancel(self, request_id: str) -> None:
        return None

    async def aclose(self) -> None:
        return None


@contextlib.asynccontextmanager
async def scripted_stack(
    kafka_bootstrap: str, backend: Scripted, **overrides: Any
) -> AsyncIterator[openai.AsyncOpenAI]:
    """A front end whose echo model is served by ``backend``."""
    settings = make_settings(kafka_bootstrap, **overrides)
    spec = load_registry().get("echo")
    async with backend_worker(settings, spec, backend), front_end(settings) as client:
        await wait_live(client, "echo")
        sdk = openai.AsyncOpenAI(base_url=f"{client.base_url}/v1", api_key=API_KEY, max_retries=0)
        yield sdk
        await sdk.close()


async def start_batch(sdk: openai.AsyncOpenAI, lines: list[dict[str, Any]]) -> Batch:
    upload = await sdk.files.create(file=("in.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    return await sdk.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )


async def test_a_batch_whose_every_line_fails_is_completed_with_only_an_error_file(
    kafka_bootstrap: str,
) -> None:
    async with scripted_stack(kafka_bootstrap, Scripted(fail=True)) as sdk:
        batch = await start_batch(sdk, [chat_line(i) for i in range(20)])
        done = await until_done(sdk, batch.id)
        assert done.status == "completed" and done.output_file_id is None, done
        assert done.request_counts is not None
        assert (done.request_counts.completed, done.request_counts.failed) == (0, 20)
        assert done.error_file_id is not None
        errors = await lines_of(sdk, done.error_file_id)
    assert sorted(e["custom_id"] for e in errors) == sorted(f"req-{i}" for i in range(20))
    assert all(e["response"] is None and e["error"]["code"] == "backend_error" for e in errors)


async def test_cancel_mid_batch_skips_what_has_not_started(kafka_bootstrap: str) -> None:
    backend = Scripted(pace_s=0.05)
    async with scripted_stack(kafka_bootstrap, backend) as sdk:
        batch = await start_batch(sdk, [chat_line(i) for i in range(400)])
        await until_counted(sdk, batch.id, 10)
        cancelling = await sdk.batches.cancel(batch.id)
        assert cancelling.status == "cancelling" and cancelling.cancelling_at
        done = await until_done(sdk, batch.id)
        assert done.status == "cancelled" and done.cancelled_at, done
        assert done.request_counts is not None
        completed = done.request_counts.completed
        assert 10 <= completed < 400 and done.request_counts.failed == 0
        assert done.output_file_id and done.error_file_id
        output = await lines_of(sdk, done.output_file_id)
        skipped = await lines_of(sdk, done.error_file_id)
        ran = backend.ran
        with pytest.raises(openai.ConflictError):
            await _cancel_completed(sdk)
    assert len(output) == completed and ran == completed
    assert {e["error"]["code"] for e in skipped} == {"batch_cancelled"}
    ids = [line["custom_id"] for line in output + skipped]
    assert sorted(ids) == sorted(f"req-{i}" for i in range(400))


async def _cancel_completed(sdk: openai.AsyncOpenAI) -> None:
    done = await until_done(sdk, (await start_batch(sdk, [chat_line(0)])).id)
    assert done.status == "completed"
    await sdk.batches.cancel(done.id)


async def test_lines_not_run_within_the_window_expire(kafka_bootstrap: str) -> None:
    # The window (1 s here, "24h" in production) is the tasks' deadline: a worker that
    # reaches them later skips them.
    backend = Scripted(pace_s=0.5)
    async with scripted_stack(kafka_bootstrap, backend, batch_window_s=1.0) as sdk:
        batch = await start_batch(sdk, [chat_line(i) for i in range(30)])
        done = await until_done(sdk, batch.id)
        assert done.status == "expired" and done.expired_at == done.expires_at, done
        assert done.request_counts is not None
        assert done.error_file_id is not None
        expired = await lines_of(sdk, done.error_file_id)
    assert done.request_counts.completed == backend.ran < 30
    assert len(expired) == 30 - backend.ran
    assert {e["error"]["code"] for e in expired} == {"batch_expired"}


async def test_ten_thousand_lines_on_echo_through_a_chunked_file(
    stack: tuple[openai.AsyncOpenAI, Settings],
) -> None:
    sdk, _ = stack
    raw = jsonl([chat_line(i, metadata_pad="x" * 100) for i in range(10_000)])
    assert len(raw) > 3 * CHUNK_BYTES, "the file must span several chunks"
    started = time.perf_counter()
    upload = await sdk.files.create(file=("big.jsonl", io.BytesIO(raw)), purpose="batch")
    assert (await sdk.files.content(upload.id)).content == raw
    batch = await sdk.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = await until_done(sdk, batch.id, timeout_s=240)
    elapsed = time.perf_counter() - started
    assert done.status == "completed" and done.output_file_id, done
    lines = await lines_of(sdk, done.output_file_id)
    print(f"\n10,000 echo lines end to end in {elapsed:.1f} s ({10_000 / elapsed:.0f} lines/s)")
    assert len(lines) == 10_000
    assert len({line["custom_id"] for line in lines}) == 10_000


@pytest.mark.model
async def test_fifty_lines_on_the_local_model(kafka_bootstrap: str) -> None:
    settings = make_settings(kafka_bootstrap)
    async with worker(settings, LOCAL), front_end(settings) as client:
        await wait_live(client, LOCAL)
        sdk = openai.AsyncOpenAI(base_url=f"{client.base_url}/v1", api_key=API_KEY, max_retries=0)
        lines = [chat_line(i, LOCAL, max_tokens=8, temperature=0) for i in range(50)]
        batch = await start_batch(sdk, lines)
        done = await until_done(sdk, batch.id, timeout_s=280)
        assert done.status == "completed" and done.output_file_id, done
        output = await lines_of(sdk, done.output_file_id)
        await sdk.close()
    assert sorted(o["custom_id"] for o in output) == sorted(f"req-{i}" for i in range(50))
    for line in output:
        body = line["response"]["body"]
        assert body["model"] == LOCAL and body["choices"][0]["message"]["content"].strip()
        usage = body["usage"]
        assert 0 < usage["completion_tokens"] <= 8 and usage["prompt_tokens"] > 5


@pytest.mark.model
async def test_interactive_requests_overtake_a_running_batch(kafka_bootstrap: str) -> None:
    settings = make_settings(kafka_bootstrap)
    body = {"prompt": "Name a colour.", "model": LOCAL, "max_tokens": 8, "temperature": 0}
    async with worker(settings, LOCAL), front_end(settings) as client:
        await wait_live(client, LOCAL)
        sdk = openai.AsyncOpenAI(base_url=f"{client.base_url}/v1", api_key=API_KEY, max_retries=0)
        idle = [await timed(client, body) for _ in range(2)]
        lines = [chat_line(i, LOCAL, max_tokens=8) for i in range(1000)]
        batch = await start_batch(sdk, lines)
        await until_counted(sdk, batch.id, 16)
        busy = []
        for _ in range(3):
            busy.append(await timed(client, body))
            await asyncio.sleep(0.2)
        running = await sdk.batches.retrieve(batch.id)
        await sdk.batches.cancel(batch.id)  # the rest is skipped: the test ends sooner
        await sdk.close()
    times = [
        r.choice.prediction_time_ms async for r, _ in batch_results(settings, batch.id) if r.choice
    ]
    batch_s = statistics.median(times) / 1000
    assert running.request_counts is not None
    pending = running.request_counts.total - running.request_counts.completed
    print(
        f"\nlanes: interactive idle {idle}; with a 1,000-line batch running {busy}; "
        f"bulk batch median {batch_s:.2f} s; {pending} lines pending"
    )
    assert pending > 500, "the batch must still be running while we measure"
    # As for bulk jobs (tests/integration/test_bulk.py): a request waits for at most the
    # bulk batch already generating.
    assert statistics.median(busy) < statistics.median(idle) + 1.6 * batch_s + 0.5, busy


async def timed(client: httpx.AsyncClient, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    response = await client.post("/v1/completion", json=body)
    assert response.status_code == 200, response.text
    return time.perf_counter() - started
