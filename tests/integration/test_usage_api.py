"""The Usage and Costs APIs and ``kafka-completions usage`` over a usage topic filled by hand:
OpenAI's SDK reads them, an API key sees its own key id only, an admin key every key."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import openai
import pytest
from openai.types.admin.organization.usage_costs_response import (
    DataResultOrganizationCostsResult as CostsResult,
)
from openai.types.admin.organization.usage_costs_response import UsageCostsResponse
from pydantic import SecretStr

from schemas import clients
from schemas.kafka import ensure_topics
from schemas.keys import KeyRecord, key_hash, key_id
from schemas.settings import Settings
from schemas.topics import Topics
from schemas.usage import UsageBucket
from tests.conftest import API_KEY, make_settings
from tests.integration.harness import front_end
from tests.integration.test_batch_cli import cli

pytestmark = [pytest.mark.kafka]

OTHER_KEY = "kc-test-other-key-91d2"
ADMIN_KEY = "kc-test-admin-key-77ae"
MINE, THEIRS = key_id(API_KEY), key_id(OTHER_KEY)
DAY = 86400
D0 = int(datetime(2024, 3, 10, tzinfo=UTC).timestamp())
LEDGER = [
    UsageBucket(
        key_id=MINE,
        model="gpt-4",
        batch=False,
        start=D0 + 60,
        requests=3,
        failed=1,
        input_tokens=30,
        output_tokens=60,
        input_cost=0.0009,
        output_cost=0.0036,
    ),
    UsageBucket(
        key_id=MINE,
        model="echo",
        batch=True,
        start=D0 + 3600,
        requests=2,
        input_tokens=8,
        output_tokens=16,
    ),
    UsageBucket(
        key_id=THEIRS,
        model="gpt-4",
        batch=False,
        start=D0 + DAY + 120,
        requests=5,
        input_tokens=50,
        output_tokens=100,
        input_cost=0.0015,
        output_cost=0.006,
    ),
]


def usage_settings(kafka_bootstrap: str) -> Settings:
    """Two API keys and an admin key."""
    return make_settings(
        kafka_bootstrap,
        api_keys=(SecretStr(API_KEY), SecretStr(OTHER_KEY)),
        admin_keys=(SecretStr(ADMIN_KEY),),
    )


async def fill(settings: Settings, buckets: list[UsageBucket]) -> None:
    """Write ``buckets`` to the usage topic as the ledger's writer keys them."""
    await ensure_topics(settings, [])
    producer = clients.producer(settings, "test-usage-fill")
    await producer.start()
    try:
        for b in buckets:
            topic = Topics(settings.topic_prefix).usage
            await producer.send_and_wait(topic, b.model_dump_json().encode(), key=b.record_key)
    finally:
        await producer.stop()


def sdk_of(client: httpx.AsyncClient, key: str) -> openai.AsyncOpenAI:
    """OpenAI's SDK on the front end with ``key`` as its admin key (the usage routes' auth)."""
    base = f"{client.base_url}/v1"
    return openai.AsyncOpenAI(base_url=base, api_key=key, admin_api_key=key, max_retries=0)


async def until_read(client: httpx.AsyncClient, timeout_s: float = 60) -> None:
    """Wait until the front end has read the ledger (the usage route stops answering 503)."""
    deadline = time.monotonic() + timeout_s
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    while time.monotonic() < deadline:
        answer = await client.get(f"/v1/organization/costs?start_time={D0}", headers=headers)
        if answer.status_code != 503:
            assert answer.status_code == 200, answer.text
            return
        await asyncio.sleep(0.2)
    raise TimeoutError("the usage ledger was not read")


def results(page: Any) -> list[tuple[int, Any, Any, Any, int, int]]:
    """(bucket start, key, model, batch, requests, input tokens) of each result of a page."""
    return [
        (b.start_time, r.api_key_id, r.model, r.batch, r.num_model_requests, r.input_tokens)
        for b in page.data
        for r in b.results
    ]


def amounts(page: UsageCostsResponse) -> list[tuple[int, str | None, float | None]]:
    """(bucket start, line item, amount) of each result of a costs page."""
    found = []
    for b in page.data:
        for r in b.results:
            assert isinstance(r, CostsResult) and r.amount is not None
            assert r.amount.currency == "usd"
            found.append((b.start_time, r.line_item, r.amount.value))
    return found


async def test_each_key_sees_its_own_usage_and_an_admin_key_every_keys(
    kafka_bootstrap: str,
) -> None:
    settings = usage_settings(kafka_bootstrap)
    await fill(settings, LEDGER)
    async with front_end(settings) as client:
        await until_read(client)
        mine, admin = sdk_of(client, API_KEY), sdk_of(client, ADMIN_KEY)
        query: dict[str, Any] = {"start_time": D0, "end_time": D0 + 2 * DAY}
        by_key = {**query, "group_by": ["api_key_id", "model", "batch"]}
        own = await mine.admin.organization.usage.completions(**by_key)
        asked_theirs = await mine.admin.organization.usage.completions(
            **by_key, api_key_ids=[THEIRS]
        )
        every = await admin.admin.organization.usage.completions(**by_key)
        only_theirs = await admin.admin.organization.usage.completions(
            **by_key, api_key_ids=[THEIRS]
        )
        hours = await mine.admin.organization.usage.completions(
            **query, bucket_width="1h", limit=2, group_by=["model"]
        )
        costs = await admin.admin.organization.usage.costs(**query, group_by=["line_item"])
        own_costs = await mine.admin.organization.usage.costs(**query)
        keyless = await client.get(
            "/v1/organization/usage/completions",
            params={"start_time": D0},
            headers={"Authorization": ""},
        )
        bad = await client.get(
            "/v1/organization/usage/completions",
            params={"start_time": D0, "bucket_width": "1w"},
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        )
        for sdk in (mine, admin):
            await sdk.close()
    assert results(own) == [(D0, MINE, "echo", True, 2, 8), (D0, MINE, "gpt-4", False, 3, 30)]
    assert [b.start_time for b in own.data] == [D0, D0 + DAY], "an empty day is present"
    assert results(asked_theirs) == [], "another key's id shows nothing of it"
    assert THEIRS not in json.dumps([own.model_dump(), asked_theirs.model_dump()])
    assert results(every) == [*results(own), (D0 + DAY, THEIRS, "gpt-4", False, 5, 50)]
    assert results(only_theirs) == [(D0 + DAY, THEIRS, "gpt-4", False, 5, 50)]
    # Our addition beside OpenAI's fields, read through the SDK's model.
    assert own.data[0].results[1].model_extra == {"num_failed_requests": 1}
    assert [b.start_time for b in hours.data] == [D0, D0 + 3600]
    assert results(hours) == [
        (D0, None, "gpt-4", None, 3, 30),
        (D0 + 3600, None, "echo", None, 2, 8),
    ]
    assert hours.has_more and hours.next_page
    lines = {(start, item): value for start, item, value in amounts(costs)}
    assert lines == {
        (D0, "echo, input"): 0.0,
        (D0, "echo, output"): 0.0,
        (D0, "gpt-4, input"): pytest.approx(0.0009),
        (D0, "gpt-4, output"): pytest.approx(0.0036),
        (D0 + DAY, "gpt-4, input"): pytest.approx(0.0015),
        (D0 + DAY, "gpt-4, output"): pytest.approx(0.006),
    }
    # The API key's own cost only, both days listed (the second, the other key's, empty).
    own_days: list[tuple[int, Any]] = [(start, v) for start, _, v in amounts(own_costs)]
    assert own_days == [(D0, pytest.approx(0.0045))]
    assert [b.start_time for b in own_costs.data] == [D0, D0 + DAY]
    assert keyless.status_code == 401
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "bucket_width"
    assert bad.json()["error"]["value"] == "1w"


async def test_the_cli_reports_every_key_as_a_table_or_as_openais_page(
    kafka_bootstrap: str,
) -> None:
    settings = usage_settings(kafka_bootstrap)
    await fill(settings, LEDGER)
    # THEIRS is a managed key with an alias: the table names it so.
    theirs = KeyRecord(
        key_id=THEIRS,
        hash=key_hash(OTHER_KEY),
        key_name="sk-kc-...91ab",
        key_alias="team-b",
        created_at=D0,
        updated_at=D0,
    )
    producer = clients.producer(settings, "test-usage-keys")
    await producer.start()
    try:
        keys = Topics(settings.topic_prefix).keys
        await producer.send_and_wait(keys, theirs.model_dump_json().encode(), THEIRS.encode())
    finally:
        await producer.stop()
    period = ["--start", "2024-03-10", "--until", "2024-03-12T00:00:00+00:00"]
    shown = await cli(settings, "usage", *period, "--by", "key,model")
    paged = await cli(settings, "usage", *period, "--by", "key", "--json")
    costs = await cli(settings, "usage", *period, "--costs", "--json")
    refused = await cli(settings, "usage", *period, "--costs", "--by", "batch")
    assert shown.code == 0, shown
    lines = shown.out.splitlines()
    assert lines[0].split() == [
        "start",
        "(UTC)",
        "key",
        "model",
        "requests",
        "failed",
        "input",
        "output",
    ]
    assert lines[1].split() == ["2024-03-10", "00:00", MINE, "echo", "2", "0", "8", "16"]
    assert lines[3].split() == ["2024-03-11", "00:00", "team-b", "gpt-4", "5", "0", "50", "100"]
    assert lines[-1].split() == ["total", "10", "1", "88", "176"]
    assert paged.code == 0, paged
    page = json.loads(paged.out)
    assert [(b["start_time"], [r["api_key_id"] for r in b["results"]]) for b in page["data"]] == [
        (D0, [MINE]),
        (D0 + DAY, [THEIRS]),
    ]
    assert page["has_more"] is False
    assert costs.code == 0, costs
    amounts = [[r["amount"]["value"] for r in b["results"]] for b in json.loads(costs.out)["data"]]
    assert amounts == [[pytest.approx(0.0045)], [pytest.approx(0.0075)]]
    assert refused.code == 2 and "--by: costs are grouped by model or key only" in refused.err
