"""A real Kafka broker for integration tests: an explicit address, else Docker, else jars.

The order: ``KC_TEST_KAFKA_BOOTSTRAP`` (a broker someone already runs; used as-is), then a
testcontainers ``KafkaContainer`` when a Docker engine answers, then ``devstack``'s
``LocalBroker`` from Maven Central jars on free ports (jars cached under ``KC_CACHE_DIR`` or
``~/.cache/kafka-completions``), which needs only Java and Maven.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from devstack.broker import DEFAULT_CACHE_DIR, LocalBroker

BOOTSTRAP_ENV = "KC_TEST_KAFKA_BOOTSTRAP"
CACHE_DIR_ENV = "KC_CACHE_DIR"
# Confluent Platform 7.9 is Apache Kafka 3.9; testcontainers' KafkaContainer drives the
# Confluent images' start scripts, which it is known to work with in KRaft mode.
DOCKER_IMAGE = "confluentinc/cp-kafka:7.9.0"
_DOCKER_PING_TIMEOUT_S = 3


@contextlib.contextmanager
def kafka_broker(tmp_dir: Path) -> Iterator[str]:
    """Yield the bootstrap address of a broker for tests, started and stopped if need be."""
    explicit = os.environ.get(BOOTSTRAP_ENV)
    if explicit:
        yield explicit
    elif _docker_answers():
        with _container_broker() as bootstrap:
            yield bootstrap
    else:
        broker = LocalBroker(tmp_dir / "broker", jar_cache_dir(), port=0, controller_port=0)
        with broker:
            yield broker.bootstrap


def jar_cache_dir() -> Path:
    """Where the broker's jars are cached, shared by all test runs on this machine."""
    return Path(os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR).expanduser()


async def wait_for_broker(bootstrap: str, timeout_s: float) -> None:
    """Wait until the broker answers a metadata request; TimeoutError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except KafkaError as exc:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"Kafka at {bootstrap} not ready after {timeout_s} s") from exc
        finally:
            await admin.close()
        await asyncio.sleep(0.5)


def _docker_answers() -> bool:
    # docker-py comes with testcontainers; without an engine from_env() fails at once.
    import docker  # type: ignore[import-untyped]
    import requests

    try:
        client = docker.from_env(timeout=_DOCKER_PING_TIMEOUT_S)
    except docker.errors.DockerException:
        return False
    with contextlib.closing(client):
        try:
            return bool(client.ping())
        except (docker.errors.DockerException, requests.RequestException, OSError):
            return False


@contextlib.contextmanager
def _container_broker() -> Iterator[str]:
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:  # testcontainers < 4.13 kept it at the old path
        from testcontainers.kafka import KafkaContainer

    container = KafkaContainer(DOCKER_IMAGE).with_kraft()
    # testcontainers sets the offsets topic to one replica but not the transaction log,
    # whose defaults (3 replicas, min ISR 2) would make every transaction hang on one node.
    container.with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
    container.with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
    with container:
        yield container.get_bootstrap_server()
