"""The client factory: every Kafka client gets the settings' connection options and our defaults."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from schemas import clients
from schemas.settings import Settings

SASL = Settings(
    kafka_bootstrap="127.0.0.1:1",
    kafka_security_protocol="SASL_PLAINTEXT",
    kafka_sasl_username="svc",
    kafka_sasl_password=SecretStr("pw"),
)


class _Recorder:
    """Stands in for an aiokafka client class: keeps what it was built with."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs


@pytest.fixture(autouse=True)
def _record(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"):
        monkeypatch.setattr(clients, name, _Recorder)


def _built(client: object) -> _Recorder:
    assert isinstance(client, _Recorder)
    return client


def _connected(kwargs: dict[str, Any], client_id: str) -> None:
    assert kwargs["bootstrap_servers"] == "127.0.0.1:1"
    assert kwargs["client_id"] == client_id
    assert kwargs["security_protocol"] == "SASL_PLAINTEXT"
    assert kwargs["sasl_plain_username"] == "svc" and kwargs["sasl_plain_password"] == "pw"


def test_a_producer_is_idempotent_with_acks_all_and_takes_options() -> None:
    built = _built(clients.producer(SASL, "kc-p", linger_ms=5))
    _connected(built.kwargs, "kc-p")
    assert built.kwargs["acks"] == "all" and built.kwargs["enable_idempotence"] is True
    assert built.kwargs["linger_ms"] == 5
    assert _built(clients.producer(SASL, "kc-p", acks=1)).kwargs["acks"] == 1


def test_a_transactional_producer_carries_its_id() -> None:
    built = _built(clients.transactional_producer(SASL, "kc-t", "tx-7", linger_ms=2))
    _connected(built.kwargs, "kc-t")
    assert built.kwargs["transactional_id"] == "tx-7"
    assert built.kwargs["enable_idempotence"] is True


def test_a_consumer_never_auto_commits_and_reads_committed_when_asked() -> None:
    plain = _built(clients.consumer(SASL, "kc-c", "t1", "t2"))
    _connected(plain.kwargs, "kc-c")
    assert plain.args == ("t1", "t2")
    assert plain.kwargs["enable_auto_commit"] is False
    assert plain.kwargs["isolation_level"] == "read_uncommitted"
    committed = _built(clients.consumer(SASL, "kc-c", committed_only=True, group_id="g"))
    assert committed.kwargs["isolation_level"] == "read_committed"
    assert committed.kwargs["group_id"] == "g"


def test_an_admin_client_is_connected_like_the_rest() -> None:
    _connected(_built(clients.admin(SASL, "kc-a")).kwargs, "kc-a")


def test_options_never_override_the_connection() -> None:
    built = _built(clients.producer(SASL, "kc-p", bootstrap_servers="elsewhere:9092"))
    _connected(built.kwargs, "kc-p")
