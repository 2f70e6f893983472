"""Every /v1 route needs a valid key, and neither an API key nor a vendor key leaks: not in a
log line (DEBUG, every logger, worker process output included), an error body, a metric or a
Kafka record."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from schemas import clients
from schemas.keys import key_id
from schemas.settings import Settings
from tests.integration.harness import front_end, process_env, spec_body, wait_live
from tests.reliability.support import process

pytestmark = [pytest.mark.kafka]
PLANTED_KEY = "kc-planted-api-key-Q7Z4W9X2"
VENDOR_KEY = "sk-planted-vendor-key-L2M8N3B6"
SECRETS = (PLANTED_KEY, VENDOR_KEY)
GOOD = {"Authorization": f"Bearer {PLANTED_KEY}"}
BAD_HEADERS: list[dict[str, str]] = [
    {},
    {"Authorization": ""},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer kc-planted-api-key-Q7Z4W9X3"},
    {"Authorization": f"Basic {PLANTED_KEY}"},
    {"Authorization": f"Bearer {key_id(PLANTED_KEY)}"},
]


def _leaks(text: str | bytes) -> list[str]:
    raw = text.encode() if isinstance(text, str) else text
    return [s for s in SECRETS if s.encode() in raw]


async def _v1_routes(client: httpx.AsyncClient) -> list[tuple[str, str]]:
    schema = (await client.get("/openapi.json")).json()
    return [
        (method.upper(), path)
        for path, item in schema["paths"].items()
        if path.startswith("/v1")
        for method in item
    ]


def _body(method: str, path: str) -> dict[str, Any]:
    """A body the route would take from a caller with a key: the refusal is the key's alone."""
    if method != "POST":
        return {}
    if path == "/v1/files":  # an upload is multipart; a JSON body is refused before the key
        return {"files": {"file": ("f.jsonl", b"{}\n")}, "data": {"purpose": "batch"}}
    return {"json": spec_body(model="echo")}


async def _every_route_needs_a_key(client: httpx.AsyncClient) -> list[httpx.Response]:
    answers = []
    routes = await _v1_routes(client)
    assert ("POST", "/v1/completion") in routes and ("GET", "/v1/models") in routes
    async with httpx.AsyncClient(base_url=client.base_url) as bare:  # no default key
        for method, path in routes:
            for headers in BAD_HEADERS:
                response = await bare.request(method, path, headers=headers, **_body(method, path))
                assert response.status_code == 401, (method, path, headers, response.text)
                assert response.headers["www-authenticate"] == "Bearer"
                answers.append(response)
    return answers


async def _client_mistakes(client: httpx.AsyncClient) -> list[httpx.Response]:
    post = "/v1/completion"
    answers = [
        await client.post(post, json=spec_body(temperature=5), headers=GOOD),
        await client.post(post, json=spec_body(model="no-such-model"), headers=GOOD),
        await client.post(post, json=spec_body(model="gpt-4"), headers=GOOD),
        await client.post(post, content=b'{"prompt": ', headers=GOOD | _JSON),
        await client.post(post, content=b'{"prompt": "\xff"}', headers=GOOD | _JSON),
        await client.post(post, content=b"x" * 2_000_000, headers=GOOD | _JSON),
        await client.post(post, content=b"prompt=hi", headers=GOOD),
    ]
    assert [r.status_code for r in answers] == [422, 404, 503, 400, 400, 413, 415]
    assert "OPENAI_API_KEY" in answers[2].text or "no live worker" in answers[2].text
    return answers


_JSON = {"content-type": "application/json"}


async def _every_record(settings: Settings) -> list[bytes]:
    admin = clients.admin(settings, "kc-test-admin")
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(settings.topic_prefix)]
    finally:
        await admin.close()
    consumer = clients.consumer(settings, "kc-test-every", *topics, auto_offset_reset="earliest")
    await consumer.start()
    raw: list[bytes] = []
    try:
        while batch := await consumer.getmany(timeout_ms=3000):
            for record in (r for rs in batch.values() for r in rs):
                raw += [record.key or b"", record.value or b""]
                raw += [k.encode() + v for k, v in record.headers]
    finally:
        await consumer.stop()
    return raw


def _metrics_url(log: Path) -> str | None:
    found = re.search(r"metrics on (http://\S+/metrics)", log.read_text())
    return found.group(1) if found else None


async def _worker_metrics(log: Path) -> str:
    deadline = time.monotonic() + 30
    while not (url := _metrics_url(log)):
        assert time.monotonic() < deadline, "the worker never logged its metrics address"
        await asyncio.sleep(0.2)
    async with httpx.AsyncClient() as plain:
        return (await plain.get(url)).text


async def test_keys_are_required_and_never_leak(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    planted = settings.model_copy(
        update={
            "api_keys": (SecretStr(PLANTED_KEY),),
            "vendor_keys": {"OPENAI_API_KEY": SecretStr(VENDOR_KEY)},
        }
    )
    env = process_env(planted, KC_LOG_LEVEL="DEBUG", OPENAI_API_KEY=VENDOR_KEY)
    log = tmp_path / "worker.log"
    with process(["worker", "--model", "echo"], env, log):
        async with front_end(planted) as client:
            client.headers.update(GOOD)
            await wait_live(client, "echo")
            answers = await _every_route_needs_a_key(client)
            answers += await _client_mistakes(client)
            ok = await client.post("/v1/completion", json=spec_body(model="echo"), headers=GOOD)
            assert ok.status_code == 200, ok.text
            answers.append(ok)
            metrics = (await client.get("/metrics")).text + await _worker_metrics(log)
    records = await _every_record(planted)
    assert any(key_id(PLANTED_KEY).encode() in r for r in records), "the key id travels"
    assert not [r.status_code for r in answers if _leaks(r.text) or _leaks(str(r.headers))]
    assert not _leaks(metrics)
    assert not [r for r in records if _leaks(r)]
    assert not _leaks(log.read_bytes()), "the worker's output"
    lines = [f"{r.name}: {r.getMessage()} {r.exc_text or ''}" for r in caplog.records]
    assert len(lines) > 50, "DEBUG logging was captured"
    assert not [line for line in lines if _leaks(line)]
