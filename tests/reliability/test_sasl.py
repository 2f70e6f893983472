"""Kafka over SASL_PLAINTEXT with SCRAM-SHA-512: the right credentials serve end to end, a wrong
password stops start-up at once with a message naming the problem."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest
from devstack.broker import LocalBroker
from pydantic import SecretStr

from schemas.errors import ConfigError
from schemas.kafka import ensure_topics
from schemas.registry import load_registry
from schemas.settings import Settings
from tests.conftest import API_KEY, cache_dir
from tests.integration.harness import front_end, spec_body, wait_live, worker
from tests.kafka_fixture import jar_cache_dir
from worker.service import serve_models

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]
USER, PASSWORD = "kc-service", "scram-pass-7c1e"


@pytest.fixture(scope="module")
def scram_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A broker with a SCRAM-SHA-512 listener and one credential made at format time."""
    data = tmp_path_factory.mktemp("scram") / "broker"
    broker = LocalBroker(
        data, jar_cache_dir(), port=0, controller_port=0, scram=(USER, PASSWORD), sasl_port=0
    )
    with broker:
        yield broker


def _settings(broker: LocalBroker, password: str) -> Settings:
    return Settings(
        kafka_bootstrap=broker.sasl_bootstrap,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username=USER,
        kafka_sasl_password=SecretStr(password),
        topic_prefix=f"s{uuid.uuid4().hex[:8]}.",
        request_partitions=1,
        results_partitions=1,
        api_keys=(SecretStr(API_KEY),),
        liveness_refresh_s=0.3,
        cache_dir=cache_dir(),
        worker_metrics_port=0,
    )


async def test_right_credentials_serve_end_to_end(scram_broker: LocalBroker) -> None:
    settings = _settings(scram_broker, PASSWORD)
    async with worker(settings, "echo"), front_end(settings) as client:
        await wait_live(client, "echo")
        response = await client.post("/v1/completion", json=spec_body(model="echo"))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["text"].startswith("Once upon a time")


async def test_wrong_password_fails_start_up_clearly(scram_broker: LocalBroker) -> None:
    settings = _settings(scram_broker, "not-the-password")
    for start in (
        ensure_topics(settings, ["echo"]),
        serve_models(["echo"], settings, load_registry(), asyncio.Event()),
    ):
        started = time.monotonic()
        with pytest.raises(ConfigError) as caught:
            await asyncio.wait_for(start, 30)
        message = str(caught.value)
        assert "refused to authenticate" in message and "SCRAM-SHA-512" in message
        assert f"KC_KAFKA_SASL_USERNAME={USER}" in message
        assert "not-the-password" not in message
        assert time.monotonic() - started < 15


def test_scram_listener_is_in_the_config(scram_broker: LocalBroker) -> None:
    config = (scram_broker.data_dir / "server.properties").read_text()
    assert f"SASL_PLAINTEXT://{scram_broker.sasl_bootstrap}" in config
    assert "sasl.enabled.mechanisms=SCRAM-SHA-512" in config
    assert PASSWORD not in config  # the credential lives in the metadata log, salted
