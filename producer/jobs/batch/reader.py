"""Reading a batch's own topics from the beginning to their end, without a consumer group.

Readers own no offsets: they assign every partition, start at the beginning and read up to
where the topics ended when they began, so a rerun sees exactly what the first run saw and
more. They read a batch's results topic (its output files) and a file's chunks: what one
batch costs, never the shared results topic.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from schemas import clients
from schemas.errors import BrokerUnavailable
from schemas.settings import Settings

_POLL_MS = 300
_MAX_RECORDS = 5000
_FETCH_BYTES = 8 * 1024 * 1024
_METADATA_WAIT_S = 10.0
# A short broker-side wait: the end offsets a scan starts with queue behind a pending fetch.
_FETCH_WAIT_MS = 50


async def scan(
    settings: Settings, topics: list[str]
) -> AsyncGenerator[list[ConsumerRecord[bytes, bytes]], None]:
    """Batches of the committed records of ``topics``, from their start to where they ended."""
    consumer = clients.consumer(
        settings,
        "kc-batch-reader",
        committed_only=True,
        auto_offset_reset="earliest",
        fetch_max_bytes=_FETCH_BYTES,
        max_partition_fetch_bytes=_FETCH_BYTES,
        fetch_max_wait_ms=_FETCH_WAIT_MS,
    )
    try:
        await consumer.start()
        partitions = await _assigned(consumer, topics)
        ends = await consumer.end_offsets(partitions)
        while await _behind(consumer, ends):
            batch = await consumer.getmany(timeout_ms=_POLL_MS, max_records=_MAX_RECORDS)
            yield [r for rs in batch.values() for r in rs]
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot read {', '.join(topics)}: {exc!r}") from exc
    finally:
        await consumer.stop()


async def _assigned(consumer: AIOKafkaConsumer, topics: list[str]) -> list[TopicPartition]:
    """Every partition of ``topics``, once the consumer has their metadata."""
    # A consumer without a group assigns itself every partition of what it subscribes to;
    # subscribing (not assign()) is what makes the client fetch those topics' metadata.
    # Checked first: the broker may auto-create a topic a consumer merely asks about.
    absent = set(topics) - await consumer.topics()
    if absent:
        raise BrokerUnavailable(
            f"topic {sorted(absent)[0]} does not exist: is KC_TOPIC_PREFIX the one the batch "
            "was created with?"
        )
    consumer.subscribe(topics)
    deadline = time.monotonic() + _METADATA_WAIT_S
    while {tp.topic for tp in consumer.assignment()} != set(topics):
        if time.monotonic() > deadline:
            raise BrokerUnavailable(f"no metadata for {', '.join(topics)} in {_METADATA_WAIT_S} s")
        await asyncio.sleep(0.05)
    return sorted(consumer.assignment())


async def _behind(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return True
    return False
