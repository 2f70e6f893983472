"""A worker whose results producer Kafka fences: it renews the producer and publishes the undone
results again, exactly once; fenced again and again (another worker has its id), it ends with
one line naming KC_WORKER_ID.

Kafka fences a producer whose transaction it aborted on the transaction's timeout, as after a
broker outage longer than it; here the fence is made at will, by starting a producer under the
worker's transactional id, which is what the broker does to the old epoch in that case too.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from devstack.process import Child

from schemas import clients
from schemas.settings import Settings
from tests.integration.harness import (
    committed_results,
    front_end,
    process_env,
    spec_body,
    wait_live,
)
from tests.reliability.support import process

pytestmark = [pytest.mark.kafka]
MODEL = "echo"
WORKER_ID = "fenced-1"


async def _fence(settings: Settings) -> None:
    """Take the worker's transactional id: the broker bumps its epoch, fencing the worker's."""
    transactional_id = f"kc-{settings.topic_prefix}{MODEL}-{WORKER_ID}"
    producer = clients.transactional_producer(settings, "kc-test-fence", transactional_id)
    await producer.start()
    await producer.stop()


async def _ask(client: httpx.AsyncClient, count: int) -> list[httpx.Response]:
    body = spec_body(model=MODEL, max_tokens=4)
    return list(
        await asyncio.gather(*(client.post("/v1/completion", json=body) for _ in range(count)))
    )


@contextlib.contextmanager
def _worker(settings: Settings, log: Path) -> Iterator[Child]:
    # Answers only once committed: each fence then comes between the worker's transactions
    # (one fenced transaction a fence), never racing its renewal's own take-over of the id.
    env = process_env(settings, KC_WORKER_ID=WORKER_ID, KC_EARLY_REPLIES="false")
    with process(["worker", "--model", MODEL], env, log) as worker:
        yield worker


async def test_a_fenced_worker_renews_its_producer_and_loses_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    with _worker(settings, log) as worker:
        async with front_end(settings) as client:
            await wait_live(client, MODEL)
            before = await _ask(client, 8)
            await _fence(settings)
            after = await _ask(client, 8)  # the worker's next transaction is the fenced one
            await _fence(settings)
            again = await _ask(client, 8)
            alive = worker.poll() is None
    answers = before + after + again
    assert [r.status_code for r in answers] == [200] * 24, [r.text for r in answers]
    assert alive, log.read_text()[-2000:]
    text = log.read_text()
    assert text.count("the results producer was fenced") == 2, text[-2000:]
    ids = {r.json()["id"] for r in answers}
    per_request = collections.Counter(
        (r.request_id, r.choice_index) for r in await committed_results(settings)
    )
    assert set(rid for rid, _ in per_request) == ids
    assert all(n == 1 for n in per_request.values()), per_request.most_common(3)


async def test_a_worker_fenced_again_and_again_ends_naming_its_id(
    settings: Settings, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    with _worker(settings, log) as worker:
        # The last request has no worker left to answer it: it ends at its deadline.
        async with front_end(settings.model_copy(update={"request_timeout_s": 10})) as client:
            await wait_live(client, MODEL)
            for _ in range(3):  # as many as a broker outage could explain: renewed each time
                await _fence(settings)
                assert [r.status_code for r in await _ask(client, 2)] == [200, 200]
            await _fence(settings)
            last = asyncio.create_task(_ask(client, 1))
            code = await asyncio.to_thread(worker.wait, 60)
            unanswered = await last
    assert [r.status_code for r in unanswered] == [504], [r.text for r in unanswered]
    text = log.read_text()
    assert code == 2, text[-2000:]
    assert "Traceback" not in text, text[-3000:]
    final = text.strip().splitlines()[-1]
    assert "fenced 4 times" in final and "KC_WORKER_ID" in final and WORKER_ID in final, final
