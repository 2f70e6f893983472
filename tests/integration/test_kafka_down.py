"""Kafka unreachable: the front end answers 503 (with Retry-After) by the deadline, never 500.

The broker is this module's own, so that stopping it leaves the session's broker to the other
tests. The front end and an echo worker serve first; with the broker stopped, every route that
publishes answers 503 ``kafka_unavailable`` within the request deadline.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from devstack.broker import LocalBroker
from devstack.process import free_port

from tests.conftest import make_settings
from tests.integration.harness import front_end, spec_body, wait_live, worker
from tests.kafka_fixture import jar_cache_dir

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]
_DEADLINE_S = 8.0


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A broker for this module alone, on ports chosen once so that a restart keeps them."""
    folder = tmp_path_factory.mktemp("down") / "broker"
    broker = LocalBroker(folder, jar_cache_dir(), port=free_port(), controller_port=free_port())
    with broker:
        yield broker


async def test_kafka_unreachable_is_a_503_by_the_deadline(own_broker: LocalBroker) -> None:
    settings = make_settings(
        own_broker.bootstrap, request_timeout_s=_DEADLINE_S, request_partitions=1
    )
    bodies = [
        ("/v1/completion", spec_body(model="echo", max_tokens=4)),
        ("/v1/completions", {"model": "echo", "prompt": "x", "max_tokens": 4}),
        # A stream publishes before its 200 goes out, so it is refused the same way.
        ("/v1/completions", {"model": "echo", "prompt": "x", "max_tokens": 4, "stream": True}),
    ]
    async with worker(settings, "echo"), front_end(settings) as client:
        await wait_live(client, "echo")
        for path, body in bodies:
            assert (await client.post(path, json=body)).status_code == 200
        own_broker.stop()
        try:
            for path, body in bodies:
                started = time.monotonic()
                response = await client.post(path, json=body)
                elapsed = time.monotonic() - started
                assert response.status_code == 503, response.text
                error = response.json()["error"]
                assert error["code"] == "kafka_unavailable"
                assert settings.kafka_bootstrap in error["message"]
                assert response.headers["Retry-After"]
                assert elapsed < _DEADLINE_S + 1
        finally:
            own_broker.start()  # back on the same ports: the worker and front end stop cleanly
