"""A batch service for tools that run outside a front end: the CLI and the Python job API.

It reads and writes the same topics as the front ends, so a batch submitted with
``kafka-completions submit`` is served over HTTP to the key that owns it, and a batch created
over HTTP is followed and collected with the CLI by id::

    async with opened(settings) as service:
        job = find_job(service.book, "nightly-1")
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from producer.jobs.batch.service import BatchService
from schemas.errors import BrokerUnavailable
from schemas.kafka import ensure_topics
from schemas.registry import Registry, load_registry
from schemas.settings import Settings

_READY_WAIT_S = 60.0


@asynccontextmanager
async def opened(
    settings: Settings, registry: Registry | None = None
) -> AsyncIterator[BatchService]:
    """A started batch service whose book has read every record up to now."""
    # A command against a running service: its topics are served; wait for none of them.
    await ensure_topics(settings, [], settle_all=False)
    service = BatchService(settings, registry or load_registry())
    await service.start()
    try:
        deadline = time.monotonic() + _READY_WAIT_S
        while not service.book.ready:
            if time.monotonic() > deadline:
                raise BrokerUnavailable(f"the batch records were not read in {_READY_WAIT_S} s")
            await asyncio.sleep(0.05)
        yield service
    finally:
        await service.stop()
