"""The usage ledger counts what the callers were told: interactive (full and streamed, with
``n``), spec fan-out, and batch lines, once each, from committed results only."""

from __future__ import annotations

import asyncio
import io
import json
from collections import Counter

import openai
import pytest

from schemas.keys import key_id
from schemas.settings import Settings
from tests.conftest import API_KEY
from tests.integration.harness import front_end, spec_body, wait_live, worker
from tests.integration.ledger import (
    Totals,
    committed,
    ledger,
    results_topics,
    summed_results,
    totals,
)
from tests.integration.test_batches import chat_line, jsonl, until_done

pytestmark = [pytest.mark.kafka]


def told(usage: dict[str, int] | None) -> Totals:
    """A response's usage, as the ledger's totals."""
    assert usage is not None
    return Counter(input_tokens=usage["prompt_tokens"], output_tokens=usage["completion_tokens"])


async def test_interactive_usage_is_counted_as_the_callers_were_told(settings: Settings) -> None:
    expected: Totals = Counter()
    async with worker(settings, "echo"), front_end(settings) as client:
        await wait_live(client, "echo")
        sdk = openai.AsyncOpenAI(base_url=f"{client.base_url}/v1", api_key=API_KEY, max_retries=0)
        for i in range(3):
            full = await sdk.completions.create(model="echo", prompt=f"p {i}", max_tokens=5, n=3)
            assert full.usage is not None
            expected += told(full.usage.model_dump()) + Counter(requests=1)
        stream = await sdk.chat.completions.create(
            model="echo",
            messages=[{"role": "user", "content": "stream me"}],
            max_tokens=7,
            stream=True,
            stream_options={"include_usage": True},
        )
        usage = [chunk.usage async for chunk in stream if chunk.usage is not None]
        expected += told(usage[0].model_dump()) + Counter(requests=1)
        fanned = await client.post("/v1/completion", json=spec_body(model=["echo", "echo"]))
        assert fanned.status_code == 200, fanned.text
        expected += told(fanned.json()["usage"]) + Counter(requests=2)
        await sdk.close()
        counted = await ledger(settings, results_topics(settings))
    mine = [b for b in counted if b.key_id == key_id(API_KEY)]
    assert {(b.model, b.batch) for b in mine} == {("echo", False)}
    assert totals(mine) == expected
    assert totals(counted) == summed_results(await committed(settings, results_topics(settings)))


async def test_a_batch_usage_equals_its_output_file(settings: Settings) -> None:
    async with worker(settings, "echo"), front_end(settings) as client:
        await wait_live(client, "echo")
        sdk = openai.AsyncOpenAI(base_url=f"{client.base_url}/v1", api_key=API_KEY, max_retries=0)
        lines = [chat_line(i, n=2) for i in range(20)] + [chat_line(20, model="not-a-model")]
        upload = await sdk.files.create(
            file=("in.jsonl", io.BytesIO(jsonl(lines[:20]))), purpose="batch"
        )
        batch = await sdk.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        done = await until_done(sdk, batch.id)
        assert done.status == "completed" and done.output_file_id is not None
        output = (await sdk.files.content(done.output_file_id)).text
        await sdk.close()
        topics = results_topics(settings, batch.id)
        counted = await asyncio.wait_for(ledger(settings, topics), 60)
    expected: Totals = Counter()
    for row in map(json.loads, output.splitlines()):
        expected += told(row["response"]["body"]["usage"]) + Counter(requests=1)
    batched = [b for b in counted if b.batch]
    assert {(b.key_id, b.model) for b in batched} == {(key_id(API_KEY), "echo")}
    assert totals(batched) == expected and expected["requests"] == 20
