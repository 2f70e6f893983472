"""Every /v1 route needs a valid key, every admin route an admin key, and no key leaks (a static
API key, an admin key, a managed key made through the admin API, a vendor key): not in a log
line (DEBUG, every logger, worker process output included), an answer (but the one that creates
a managed key), a metric or a Kafka record (the keys topic and the usage ledger included)."""

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
ADMIN_KEY = "kc-planted-admin-key-R5T1Y8U3"
VENDOR_KEY = "sk-planted-vendor-key-L2M8N3B6"
SECRETS = [PLANTED_KEY, ADMIN_KEY, VENDOR_KEY]  # and the managed key, once it is made
GOOD = {"Authorization": f"Bearer {PLANTED_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
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


async def _admin_routes_need_an_admin_key(client: httpx.AsyncClient) -> list[httpx.Response]:
    """Every admin route: 401 without a valid key, 403 with an API key."""
    schema = (await client.get("/openapi.json")).json()
    routes = [
        (m.upper(), p) for p, item in schema["paths"].items() if p.startswith("/key/") for m in item
    ]
    assert ("POST", "/key/generate") in routes and ("GET", "/key/list") in routes
    answers = []
    async with httpx.AsyncClient(base_url=client.base_url) as bare:
        for method, path in routes:
            body: dict[str, Any] | None = {"key": "k", "keys": ["k"]} if method == "POST" else None
            for headers in [*BAD_HEADERS, GOOD]:
                response = await bare.request(method, path, headers=headers, json=body)
                expected = 403 if headers is GOOD else 401
                assert response.status_code == expected, (method, path, headers, response.text)
                answers.append(response)
    return answers


async def _a_managed_key_lived(client: httpx.AsyncClient) -> list[httpx.Response]:
    """A managed key made, used, read in the ledger, changed, listed, revoked, refused; the
    answers but the one that shows the key (which joins SECRETS)."""
    made = await client.post("/key/generate", json={"key_alias": "team-a"}, headers=ADMIN)
    assert made.status_code == 200, made.text
    managed = made.json()["key"]
    SECRETS.append(managed)
    own = {"Authorization": f"Bearer {managed}"}
    answers = [await client.post("/v1/completion", json=spec_body(model="echo"), headers=own)]
    assert answers[0].status_code == 200, answers[0].text
    since: dict[str, str | int] = {"start_time": int(time.time()) - 600, "bucket_width": "1m"}
    deadline = time.monotonic() + 30
    while True:  # the ledger counts the committed result within a moment
        usage = await client.get("/v1/organization/usage/completions", params=since, headers=own)
        assert usage.status_code == 200, usage.text
        if any(b["results"] for b in usage.json()["data"]):
            break
        assert time.monotonic() < deadline, "the ledger never counted the managed key's call"
        await asyncio.sleep(0.2)
    answers.append(usage)
    key = key_id(managed)
    answers += [
        await client.get("/v1/organization/usage/completions", params=since, headers=ADMIN),
        await client.get(
            "/v1/organization/costs", params={"start_time": since["start_time"]}, headers=ADMIN
        ),
        await client.post("/key/update", json={"key": key, "rpm_limit": 5}, headers=ADMIN),
        await client.get("/key/info", params={"key": key}, headers=ADMIN),
        await client.get("/key/list", params={"return_full_object": "true"}, headers=ADMIN),
        await client.post("/key/delete", json={"keys": [key]}, headers=ADMIN),
    ]
    assert [r.status_code for r in answers] == [200] * len(answers), [r.text for r in answers]
    await asyncio.sleep(0.5)
    refused = await client.post("/v1/completion", json=spec_body(model="echo"), headers=own)
    assert refused.status_code == 401, refused.text
    return [*answers, refused]


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
            "admin_keys": (SecretStr(ADMIN_KEY),),
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
            answers += await _admin_routes_need_an_admin_key(client)
            answers += await _a_managed_key_lived(client)
            ok = await client.post("/v1/completion", json=spec_body(model="echo"), headers=GOOD)
            assert ok.status_code == 200, ok.text
            answers.append(ok)
            metrics = (await client.get("/metrics")).text + await _worker_metrics(log)
    records = await _every_record(planted)
    assert any(key_id(PLANTED_KEY).encode() in r for r in records), "the key id travels"
    assert any(key_id(SECRETS[-1]).encode() in r for r in records), "the managed key's id too"
    assert len(SECRETS) == 4, "the managed key is among the secrets looked for"
    assert not [r.status_code for r in answers if _leaks(r.text) or _leaks(str(r.headers))]
    assert not _leaks(metrics)
    assert not [r for r in records if _leaks(r)]
    assert not _leaks(log.read_bytes()), "the worker's output"
    lines = [f"{r.name}: {r.getMessage()} {r.exc_text or ''}" for r in caplog.records]
    assert len(lines) > 50, "DEBUG logging was captured"
    assert not [line for line in lines if _leaks(line)]
