"""Managed keys on a real broker: the admin API and the CLI make, change and revoke keys, every
front end acts on a change within 2 s, and the key is never on Kafka, in a log or a metric."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import openai
import pytest
from pydantic import SecretStr

from producer.jobs.batch.reader import scan
from schemas.keys import key_hash, key_id
from schemas.settings import Settings
from schemas.topics import Topics
from tests.conftest import API_KEY, make_settings
from tests.integration.harness import front_end, wait_live, worker
from tests.integration.test_batch_cli import cli
from tests.integration.test_batches import chat_line, jsonl

pytestmark = [pytest.mark.kafka]
ADMIN_KEY = "kc-test-admin-7c1e2a"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
PROPAGATION_S = 2.0


def _settings(kafka_bootstrap: str, **overrides: Any) -> Settings:
    return make_settings(kafka_bootstrap, admin_keys=(SecretStr(ADMIN_KEY),), **overrides)


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _generate(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/key/generate", json=body, headers=ADMIN)
    assert response.status_code == 200, response.text
    made: dict[str, Any] = response.json()
    return made


async def _within(
    seconds: float, probe: Callable[[], Awaitable[bool]], what: str, since: float | None = None
) -> float:
    """Poll ``probe`` until it holds; the seconds it took from ``since`` (default: now)."""
    start = time.monotonic() if since is None else since
    while not await probe():
        assert time.monotonic() - start < seconds, f"{what}: not within {seconds} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def _topic_bytes(settings: Settings) -> bytes:
    """Every key and value on the keys topic, read committed from its beginning."""
    found = [
        (r.key or b"") + b" " + (r.value or b"")
        async for records in scan(settings, [Topics(settings.topic_prefix).keys])
        for r in records
    ]
    return b"\n".join(found)


async def test_an_admin_makes_a_key_the_sdk_calls_with_it_and_it_is_kept_to_its_models(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings = _settings(kafka_bootstrap)
    async with worker(settings, "echo"), front_end(settings) as client:
        await wait_live(client, "echo")
        # Admin routes: no key 401, an API key 403.
        no_key = await client.post("/key/generate", json={}, headers={"Authorization": ""})
        assert no_key.status_code == 401, no_key.text
        static = await client.post("/key/generate", json={}, headers=_bearer(API_KEY))
        assert (static.status_code, static.json()["error"]["code"]) == (403, "admin_key_required")
        made = await _generate(client, key_alias="team-a", models=["echo"], max_budget=5)
        key = made["key"]
        base = f"{client.base_url}/v1"
        sdk = openai.AsyncOpenAI(base_url=base, api_key=key, max_retries=0)
        answer = await sdk.completions.create(model="echo", prompt="managed hello", max_tokens=8)
        assert answer.choices[0].text.startswith("managed hello")
        with pytest.raises(openai.PermissionDeniedError) as refused:
            await sdk.chat.completions.create(
                model="gpt-4", messages=[{"role": "user", "content": "hi"}]
            )
        assert refused.value.status_code == 403 and "'gpt-4'" in refused.value.message
        assert refused.value.code == "model_not_allowed"
        # It lists the models it may call, where a static key lists every one.
        assert [m.id async for m in sdk.models.list()] == ["echo"]
        listed = (await client.get("/v1/models")).json()["data"]
        assert len(listed) > 1 and "gpt-4" in {m["id"] for m in listed}
        # A batch is held to the key's models too.
        upload = await sdk.files.create(
            file=("in.jsonl", io.BytesIO(jsonl([chat_line(0, model="echo")]))), purpose="batch"
        )
        await client.post(
            "/key/update", json={"key": made["token_id"], "models": ["gpt-4"]}, headers=ADMIN
        )
        with pytest.raises(openai.PermissionDeniedError, match="echo"):
            await sdk.batches.create(
                input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
        await sdk.close()
        metrics = (await client.get("/metrics")).text
    # The key was shown once: not on Kafka (its hash is), not in a log line, not in a metric.
    on_kafka = await _topic_bytes(settings)
    assert key_hash(key).encode() in on_kafka and key.encode() not in on_kafka
    assert key_id(key) in caplog.text and key not in caplog.text
    assert key not in metrics


async def test_two_front_ends_act_on_a_change_made_on_either_within_2_s(
    kafka_bootstrap: str,
) -> None:
    settings = _settings(kafka_bootstrap, results_partitions=2)
    fronts = [settings.model_copy(update={"reply_partition": p}) for p in (0, 1)]
    async with worker(settings, "echo"), front_end(fronts[0]) as a, front_end(fronts[1]) as b:
        await wait_live(a, "echo")
        await wait_live(b, "echo")

        async def accepted(client: httpx.AsyncClient, key: str) -> bool:
            return (await client.get("/v1/models", headers=_bearer(key))).status_code == 200

        async def refused(client: httpx.AsyncClient, key: str) -> bool:
            return (await client.get("/v1/models", headers=_bearer(key))).status_code == 401

        async def echoes(client: httpx.AsyncClient, key: str) -> int:
            body = {"prompt": "p", "model": "echo", "max_tokens": 2}
            return (
                await client.post("/v1/completion", json=body, headers=_bearer(key))
            ).status_code

        made = await _generate(a, models=["gpt-4"])
        key = made["key"]
        created = time.monotonic()
        assert await accepted(a, key), "the front end that wrote the key knows it at once"
        took = [await _within(PROPAGATION_S, lambda: accepted(b, key), "created", created)]
        assert await echoes(b, key) == 403  # outside its models, on B too

        update = {"key": made["token_id"], "models": ["echo"]}
        assert (await a.post("/key/update", json=update, headers=ADMIN)).status_code == 200
        changed = time.monotonic()
        took.append(
            await _within(
                PROPAGATION_S, lambda: _is(echoes(b, key), 200), "models changed", changed
            )
        )

        deleted = await b.post("/key/delete", json={"keys": [key]}, headers=ADMIN)
        assert deleted.json() == {"deleted_keys": [made["token_id"]]}
        revoked = time.monotonic()
        assert await refused(b, key)
        took.append(await _within(PROPAGATION_S, lambda: refused(a, key), "revoked", revoked))
        assert await echoes(a, key) == 401
    print(f"\npropagation to the other front end: {', '.join(f'{t:.3f} s' for t in took)}")


async def _is(status: Awaitable[int], expected: int) -> bool:
    return await status == expected


async def test_the_cli_creates_lists_and_revokes_keys(kafka_bootstrap: str) -> None:
    settings = _settings(kafka_bootstrap)
    async with front_end(settings) as client:
        made = await cli(settings, "keys", "create", "--alias", "ci", "--model", "echo")
        assert made.code == 0, made
        key = made.out.strip()
        found = key_id(key)
        assert key.startswith("sk-kc-") and found in made.err and key not in made.err
        assert (await client.get("/v1/models", headers=_bearer(key))).status_code == 200
        info = await client.get("/key/info", params={"key": found}, headers=ADMIN)
        assert info.json()["info"]["key_alias"] == "ci"

        listed = await cli(settings, "keys", "list")
        assert listed.code == 0 and found in listed.out and "ci" in listed.out
        shown = await cli(settings, "keys", "info", found)
        assert json.loads(shown.out)["models"] == ["echo"]
        updated = await cli(settings, "keys", "update", found, "--clear", "models", "--rpm", "7")
        assert updated.code == 0 and "every model" in updated.out, updated
        revoked = await cli(settings, "keys", "revoke", found)
        assert revoked.code == 0 and f"revoked {found}" in revoked.out, revoked
        since = time.monotonic()

        async def refused() -> bool:
            return (await client.get("/v1/models", headers=_bearer(key))).status_code == 401

        await _within(PROPAGATION_S, refused, "revoked by the CLI", since)
        assert found not in (await cli(settings, "keys", "list")).out
        again = await cli(settings, "keys", "revoke", found)
        assert again.code == 2 and f"no managed key with key id {found}" in again.err
        unknown_model = await cli(settings, "keys", "create", "--model", "gpt-5")
        assert unknown_model.code == 2 and "gpt-5" in unknown_model.err
    for ran in (listed, shown, updated, revoked, again):
        assert key not in ran.out + ran.err
