"""The development broker: aiokafka round trips and transactions, LocalBroker and its CLI."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from devstack.broker import LocalBroker
from devstack.cli import add_broker_commands

from tests.kafka_fixture import jar_cache_dir, kafka_broker, wait_for_broker

pytestmark = pytest.mark.kafka

needs_java_and_maven = pytest.mark.skipif(
    shutil.which("java") is None or shutil.which("mvn") is None,
    reason="LocalBroker needs java and mvn on PATH",
)
_RECEIVE_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
async def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """One broker for the whole module."""
    with kafka_broker(tmp_path_factory.mktemp("kafka")) as address:
        await wait_for_broker(address, timeout_s=60)
        yield address


async def _new_topic(bootstrap: str) -> str:
    name = f"test-broker-{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    return name


async def _read_values(
    bootstrap: str, topic: str, *, isolation_level: str, until: bytes
) -> list[bytes]:
    """Read the topic from the start until the value ``until`` arrives."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        isolation_level=isolation_level,
        enable_auto_commit=False,
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        while until not in values:
            record = await asyncio.wait_for(consumer.getone(), _RECEIVE_TIMEOUT_S)
            assert record.value is not None
            values.append(record.value)
    finally:
        await consumer.stop()
    return values


async def test_produce_consume_round_trip(bootstrap: str) -> None:
    topic = await _new_topic(bootstrap)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", key=b"k1")
    finally:
        await producer.stop()

    # A consumer group exercises the group coordinator and __consumer_offsets, which the
    # one-node replication settings exist for.
    group = f"test-broker-group-{uuid.uuid4().hex[:8]}"
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), _RECEIVE_TIMEOUT_S)
        await consumer.commit()
        committed = await consumer.committed(TopicPartition(topic, 0))
    finally:
        await consumer.stop()
    assert (record.key, record.value) == (b"k1", b"hello")
    assert committed == 1


async def test_transactions_commit_and_abort(bootstrap: str) -> None:
    topic, source = await _new_topic(bootstrap), await _new_topic(bootstrap)
    group = f"test-broker-txn-group-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=f"test-broker-{uuid.uuid4().hex}"
    )
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed-1")
            await producer.send_offsets_to_transaction({TopicPartition(source, 0): 7}, group)
        with pytest.raises(RuntimeError, match="abort me"):
            async with producer.transaction():
                await producer.send_and_wait(topic, b"aborted")
                raise RuntimeError("abort me")
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed-2")
    finally:
        await producer.stop()

    committed = await _read_values(
        bootstrap, topic, isolation_level="read_committed", until=b"committed-2"
    )
    assert committed == [b"committed-1", b"committed-2"]
    # The aborted record was written, so its absence above is the isolation, not a lost send.
    uncommitted = await _read_values(
        bootstrap, topic, isolation_level="read_uncommitted", until=b"committed-2"
    )
    assert uncommitted == [b"committed-1", b"aborted", b"committed-2"]

    offsets_reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await offsets_reader.start()
    try:
        assert await offsets_reader.committed(TopicPartition(source, 0)) == 7
    finally:
        await offsets_reader.stop()


@needs_java_and_maven
def test_local_broker_status_and_stop(tmp_path: Path) -> None:
    broker = LocalBroker(tmp_path / "own", jar_cache_dir(), port=0, controller_port=0)
    assert broker.status() is None
    try:
        address = broker.start()
        running = broker.status()
        assert running is not None
        assert running.bootstrap == address
        assert running.data_dir == (tmp_path / "own").resolve()
        assert broker.start() == address  # already running: same broker, no second one
        assert (tmp_path / "own" / "broker.pid").read_text().strip() == str(running.pid)
    finally:
        broker.stop()
    assert broker.status() is None
    assert not (tmp_path / "own" / "broker.pid").exists()
    broker.stop()  # stopping a stopped broker is not an error


def test_status_ignores_stale_pid_file(tmp_path: Path) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    data_dir = tmp_path / "stale"
    data_dir.mkdir()
    state = {"pid": int(gone.stdout), "bootstrap": "127.0.0.1:1"}
    (data_dir / "broker.json").write_text(json.dumps(state))
    assert LocalBroker(data_dir, tmp_path / "cache").status() is None


@needs_java_and_maven
def test_cli_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="kafka-completions")
    add_broker_commands(parser.add_subparsers(dest="command", required=True))
    where = ["--data-dir", str(tmp_path / "cli"), "--cache-dir", str(jar_cache_dir())]
    ports = ["--port", "0", "--controller-port", "0"]

    def run(action: str) -> tuple[int, str]:
        args = parser.parse_args(["broker", action, *where, *ports])
        code = args.handler(args)
        return code, capsys.readouterr().out

    try:
        code, out = run("start")
        assert code == 0
        assert out.startswith("broker ready at 127.0.0.1:"), out
        assert run("status")[0] == 0
        assert run("start")[1].startswith("broker already running at 127.0.0.1:")
    finally:
        code, out = run("stop")
    assert code == 0
    assert out.startswith("broker stopped (pid "), out
    assert run("status") == (1, f"broker not running (data in {(tmp_path / 'cli').resolve()})\n")
