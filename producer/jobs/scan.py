"""Reading whole topics from the beginning, without a consumer group: what job tools do.

Job commands own no offsets: they assign every partition, start at the beginning and read to
the end (or keep following), so a rerun sees exactly what the first run saw and more. Records
of other jobs are skipped on their bytes before any JSON is parsed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from schemas.errors import BrokerUnavailable
from schemas.kafka import client_options
from schemas.settings import Settings

_POLL_MS = 300
_MAX_RECORDS = 5000
_FETCH_BYTES = 8 * 1024 * 1024
_METADATA_WAIT_S = 10.0
# A short broker-side wait: the end offsets a scan starts with queue behind a pending fetch.
_FETCH_WAIT_MS = 50


class TopicMissing(BrokerUnavailable):
    """A topic to read does not exist (nothing was ever submitted under this prefix)."""


def job_needle(job_id: str) -> bytes:
    """The bytes every wire message of ``job_id`` contains (``encode`` writes compact JSON)."""
    return b'"job_id":' + json.dumps(job_id).encode()


async def scan(
    settings: Settings, topics: list[str], *, needle: bytes | None = None, follow: bool = False
) -> AsyncGenerator[list[ConsumerRecord[bytes, bytes]], None]:
    """Batches of the committed records of ``topics`` (containing ``needle``) from the start.

    Without ``follow`` it ends once it has read up to where the topics ended when it began;
    with ``follow`` it goes on, yielding an empty batch when nothing came, until the caller
    stops iterating.
    """
    consumer = AIOKafkaConsumer(
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
        fetch_max_bytes=_FETCH_BYTES,
        max_partition_fetch_bytes=_FETCH_BYTES,
        fetch_max_wait_ms=_FETCH_WAIT_MS,
        **client_options(settings, "kc-job-reader"),
    )
    try:
        await consumer.start()
        partitions = await _assigned(consumer, topics)
        ends = await consumer.end_offsets(partitions)
        while follow or await _behind(consumer, ends):
            batch = await consumer.getmany(timeout_ms=_POLL_MS, max_records=_MAX_RECORDS)
            records = [r for rs in batch.values() for r in rs]
            yield [r for r in records if needle is None or (r.value and needle in r.value)]
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
        raise TopicMissing(
            f"topic {sorted(absent)[0]} does not exist: is KC_TOPIC_PREFIX the one the job "
            "was submitted with?"
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
