"""A managed key's limits, as a caller with the openai SDK meets them: rpm held across two front
ends, tpm, the budget, and a batch refused at creation by its most cost."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from pydantic import SecretStr

from schemas.registry import Registry, load_registry
from schemas.settings import Settings
from tests.conftest import make_settings
from tests.integration.harness import front_end, wait_live, worker

pytestmark = [pytest.mark.kafka]
ADMIN_KEY = "kc-test-admin-key-4c1d"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
PRICE = 1e-5  # USD a token, in and out, of the priced echo model


@pytest.fixture
def limited(kafka_bootstrap: str) -> Settings:
    """Settings with an admin key; a fixed window of one reply partition per front end."""
    return make_settings(kafka_bootstrap, admin_keys=(SecretStr(ADMIN_KEY),))


def priced() -> Registry:
    """The registry, with ``echo`` priced (what the front end's ledger and quota use)."""
    specs = [
        s.model_copy(update={"input_cost_per_token": PRICE, "output_cost_per_token": PRICE})
        if s.name == "echo"
        else s
        for s in load_registry()
    ]
    return Registry(specs)


async def new_key(client: httpx.AsyncClient, **fields: Any) -> str:
    """A managed key made through the admin API."""
    response = await client.post("/key/generate", json=fields, headers=ADMIN)
    assert response.status_code == 200, response.text
    key: str = response.json()["key"]
    return key


def sdk(client: httpx.AsyncClient, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{client.base_url}/v1", api_key=key, max_retries=0)


@pytest.fixture
async def one_front(limited: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with worker(limited, "echo"), front_end(limited, priced()) as client:
        await wait_live(client, "echo")
        yield client


async def test_rpm_holds_within_10_percent_across_two_front_ends(limited: Settings) -> None:
    fronts = [limited.model_copy(update={"reply_partition": p}) for p in (0, 1)]
    async with worker(limited, "echo"), front_end(fronts[0]) as a, front_end(fronts[1]) as b:
        await wait_live(a, "echo")
        await wait_live(b, "echo")
        key = await new_key(a, rpm_limit=40)
        await asyncio.sleep(2)  # a created key takes effect everywhere within 2 s
        callers = [sdk(a, key), sdk(b, key)]

        async def call(i: int) -> int | openai.RateLimitError:
            try:
                await callers[i % 2].completions.create(model="echo", prompt="hi", max_tokens=2)
            except openai.RateLimitError as exc:
                return exc
            return 200

        outcomes = await asyncio.gather(*(call(i) for i in range(120)))
        for c in callers:
            await c.close()
    admitted = outcomes.count(200)
    refusals = [o for o in outcomes if isinstance(o, openai.RateLimitError)]
    # The admissions log decides every request alike on both front ends: exactly the limit.
    assert admitted == 40 and len(refusals) == 80, admitted
    first = refusals[0]
    assert first.code == "rate_limit_exceeded" and "rpm_limit" in first.message
    assert 1 <= int(first.response.headers["retry-after"]) <= 60


async def until_refused(caller: openai.AsyncOpenAI) -> tuple[int, openai.RateLimitError | None]:
    """Requests of 20 tokens at most, half a second apart (the ledger counts each committed
    result within a moment), until one is refused: the tokens used before, and the refusal."""
    used = 0
    for _ in range(30):
        try:
            done = await caller.completions.create(model="echo", prompt="hi", max_tokens=20)
        except openai.RateLimitError as exc:
            return used, exc
        assert done.usage is not None
        used += done.usage.total_tokens
        await asyncio.sleep(0.5)
    return used, None


async def test_tpm_refuses_once_the_minute_holds_the_limit(one_front: httpx.AsyncClient) -> None:
    caller = sdk(one_front, await new_key(one_front, tpm_limit=100))
    used, refusal = await until_refused(caller)
    await caller.close()
    assert refusal is not None and refusal.code == "rate_limit_exceeded", used
    assert "tpm_limit" in refusal.message
    assert 100 <= used < 100 + 30  # refused at the limit, not a request later
    assert int(refusal.response.headers["retry-after"]) >= 1


async def test_the_budget_refuses_with_insufficient_quota(one_front: httpx.AsyncClient) -> None:
    caller = sdk(one_front, await new_key(one_front, max_budget=0.001, budget_duration="1d"))
    used, refusal = await until_refused(caller)
    await caller.close()
    spent = used * PRICE
    assert refusal is not None and refusal.code == "insufficient_quota", spent
    assert 0.001 <= spent < 0.001 + 30 * PRICE
    assert 1 <= int(refusal.response.headers["retry-after"]) <= 86400


def lines(count: int, max_tokens: int) -> bytes:
    rows = [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/completions",
            "body": {"model": "echo", "prompt": "hello", "max_tokens": max_tokens},
        }
        for i in range(count)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


async def test_a_batch_past_the_remaining_budget_is_refused_at_create(
    one_front: httpx.AsyncClient,
) -> None:
    key = await new_key(one_front, max_budget=0.01)
    caller = sdk(one_front, key)
    # 100 lines of up to 100 output tokens: at least 100 * 100 * PRICE = $0.10 > $0.01.
    big = await caller.files.create(
        file=("big.jsonl", io.BytesIO(lines(100, 100))), purpose="batch"
    )
    with pytest.raises(openai.RateLimitError) as refused:
        await caller.batches.create(
            input_file_id=big.id, endpoint="/v1/completions", completion_window="24h"
        )
    assert refused.value.code == "insufficient_quota"
    assert "this batch may cost up to" in refused.value.message
    # Two lines of 10 tokens fit ($0.0006 at most), and the batch runs.
    small = await caller.files.create(file=("s.jsonl", io.BytesIO(lines(2, 10))), purpose="batch")
    batch = await caller.batches.create(
        input_file_id=small.id, endpoint="/v1/completions", completion_window="24h"
    )
    listed = [b.id async for b in caller.batches.list()]
    await caller.close()
    assert listed == [batch.id]
