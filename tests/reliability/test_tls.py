"""Kafka over TLS, and SCRAM over TLS, against a real broker with certificates made by keytool.

The broker listens for SSL and SASL_SSL clients with a key signed by a CA made for this module;
the front end and a worker serve end to end through either listener, trusting that CA. A
process given another CA stops at start-up with one line naming the file, and no traceback.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from devstack.broker import LocalBroker
from devstack.certs import Authority, make_broker_keystore, make_ca
from pydantic import SecretStr

from schemas.settings import Settings
from tests.conftest import make_settings
from tests.integration.harness import front_end, process_env, spec_body, wait_live, worker
from tests.kafka_fixture import jar_cache_dir

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]
USER, PASSWORD = "kc-tls-user", "scram-over-tls-5d2a"


@dataclass(frozen=True)
class TlsBroker:
    """A running broker with SSL and SASL_SSL listeners, its CA, and a CA it never used."""

    broker: LocalBroker
    ca: Authority
    other_ca: Authority


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    """Certificates made now into a temporary folder, and a broker serving with them."""
    folder = tmp_path_factory.mktemp("tls")
    ca = make_ca(folder / "ca")
    keystore = make_broker_keystore(folder / "keys", ca)
    other = make_ca(folder / "other", "kc-other-ca")
    broker = LocalBroker(
        folder / "broker",
        jar_cache_dir(),
        port=0,
        controller_port=0,
        scram=(USER, PASSWORD),
        tls=keystore,
    )
    with broker:
        yield TlsBroker(broker, ca, other)


def _settings(tls: TlsBroker, protocol: str, cafile: Path, **extra: Any) -> Settings:
    sasl: dict[str, Any] = {}
    if protocol == "SASL_SSL":
        sasl = {
            "kafka_sasl_mechanism": "SCRAM-SHA-512",
            "kafka_sasl_username": USER,
            "kafka_sasl_password": SecretStr(PASSWORD),
        }
    return make_settings(
        tls.broker.listener(protocol),
        kafka_security_protocol=protocol,
        kafka_ssl_cafile=str(cafile),
        request_partitions=1,
        results_partitions=1,
        **sasl,
        **extra,
    )


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
async def test_front_end_and_worker_serve_over_tls(tls_broker: TlsBroker, protocol: str) -> None:
    settings = _settings(tls_broker, protocol, tls_broker.ca.pem)
    assert settings.kafka_bootstrap != tls_broker.broker.bootstrap  # not the PLAINTEXT port
    async with worker(settings, "echo"), front_end(settings) as client:
        await wait_live(client, "echo")
        response = await client.post("/v1/completion", json=spec_body(model="echo"))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["text"].startswith("Once upon a time")


def test_the_listeners_are_in_the_config(tls_broker: TlsBroker) -> None:
    config = (tls_broker.broker.data_dir / "server.properties").read_text()
    for protocol in ("SSL", "SASL_SSL", "SASL_PLAINTEXT"):
        assert f"{protocol}://{tls_broker.broker.listener(protocol)}" in config
    assert "ssl.keystore.type=PKCS12" in config
    assert "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=" in config


@pytest.mark.parametrize("role", [["serve"], ["worker", "--model", "echo"]])
@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_a_wrong_ca_stops_start_up_with_one_clear_line(
    tls_broker: TlsBroker, protocol: str, role: list[str]
) -> None:
    wrong = tls_broker.other_ca.pem
    settings = _settings(tls_broker, protocol, wrong)
    env = process_env(
        settings,
        KC_KAFKA_SECURITY_PROTOCOL=protocol,
        KC_KAFKA_SSL_CAFILE=str(wrong),
        KC_KAFKA_SASL_USERNAME=USER,
        KC_KAFKA_SASL_PASSWORD=PASSWORD,
        KC_PORT="0",
        KC_TOPIC_PREFIX=f"w{uuid.uuid4().hex[:8]}.",
    )
    done = subprocess.run(
        [sys.executable, "-m", "producer.cli", *role],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # Informational log lines may come first; the failure itself is one line, and alone.
    lines = [ln for ln in done.stderr.strip().splitlines() if " INFO " not in ln]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, done.stderr
    line = lines[0]
    assert line.startswith("kafka-completions: ")
    assert "Traceback" not in done.stderr
    assert f"KC_KAFKA_SSL_CAFILE={wrong}" in line
    assert "certificate" in line and settings.kafka_bootstrap in line
    assert PASSWORD not in done.stderr
