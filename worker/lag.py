"""Consumer lag per partition: how many records of a model wait behind this worker."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from prometheus_client import Gauge

LAG_INTERVAL_S = 2.0


async def watch_lag(consumer: AIOKafkaConsumer, gauge: Gauge, model: str) -> None:
    """Every few seconds, set ``gauge{model, topic, partition}`` to highwater - position."""
    while True:
        await asyncio.sleep(LAG_INTERVAL_S)
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue  # nothing fetched from this partition yet
            with contextlib.suppress(KafkaError, AssertionError):
                position = await consumer.position(tp)
                gauge.labels(model, tp.topic, str(tp.partition)).set(max(0, highwater - position))
