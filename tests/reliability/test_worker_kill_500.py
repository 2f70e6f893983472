"""A worker SIGKILLed mid-batch under 500 in-flight requests, then restarted: 500 answers, a
read_committed reader of the results topic sees each exactly once, and the usage ledger holds
exactly what the 500 callers were told."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from devstack.process import stop as stop_process

from schemas.settings import Settings
from tests.integration.harness import (
    LOCAL,
    committed_results,
    front_end,
    process_env,
    spec_body,
    wait_live,
)
from tests.integration.ledger import ledger, results_topics, totals
from tests.reliability.support import concurrent_calls, process, tally

pytestmark = [pytest.mark.kafka, pytest.mark.model, pytest.mark.slow, pytest.mark.timeout(600)]
REQUESTS = 500


async def test_sigkill_under_500_in_flight(settings: Settings, tmp_path: Path) -> None:
    patient = settings.model_copy(update={"request_timeout_s": 400})
    env = process_env(patient)
    body = spec_body(model=LOCAL, max_tokens=4, stop=None)
    with process(["worker", "--model", LOCAL], env, tmp_path / "first.log") as first:
        async with front_end(patient) as client:
            await wait_live(client, LOCAL)
            async with concurrent_calls(client, body, REQUESTS) as calls:
                before_kill = sum(c.done() for c in calls)
                assert 0 < before_kill < REQUESTS, before_kill
                first.send_signal(signal.SIGKILL)
                await asyncio.to_thread(first.wait)
                killed = time.monotonic()
                with process(["worker", "--model", LOCAL], env, tmp_path / "second.log"):
                    pending = [c for c in calls if not c.done()]
                    await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    first_after_s = time.monotonic() - killed
                    responses = await asyncio.gather(*calls)
                    all_after_s = time.monotonic() - killed
            ledger_buckets = await ledger(patient, results_topics(patient))
    stop_process(first)
    assert [r.status_code for r in responses] == [200] * REQUESTS, [
        r.text for r in responses if r.status_code != 200
    ][:3]
    ids = {r.json()["id"] for r in responses}
    counted = tally(await committed_results(patient), ids)
    print(
        f"\n{before_kill}/{REQUESTS} answered before SIGKILL; {counted}; next answer "
        f"{first_after_s:.1f} s after the kill, all {all_after_s:.1f} s after"
    )
    assert len(ids) == REQUESTS
    assert counted.missing == 0 and counted.duplicates == 0 and counted.received == REQUESTS
    told: Counter[str] = Counter(requests=REQUESTS)
    for response in responses:
        usage = response.json()["usage"]
        told.update(input_tokens=usage["prompt_tokens"], output_tokens=usage["completion_tokens"])
    assert totals(ledger_buckets) == told
