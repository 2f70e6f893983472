"""The publisher's bound: a broker that does not take the tasks is a BrokerUnavailable by the
caller's deadline, never a wait on aiokafka's own (much longer) timeouts."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from producer.publisher import Publisher
from schemas.errors import BrokerUnavailable
from schemas.settings import Settings
from schemas.wire import Sampling, TaskMessage


class _StuckProducer:
    """Like AIOKafkaProducer.send while the broker is down: waits for metadata forever."""

    async def send(self, *_: Any, **__: Any) -> asyncio.Future[None]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def _task() -> TaskMessage:
    sampling = Sampling(max_tokens=1, temperature=0, top_p=1)
    return TaskMessage(
        request_id="r", choice_index=0, model="echo", prompt="p", sampling=sampling, enqueued_at=0
    )


async def test_publish_gives_up_at_the_timeout() -> None:
    publisher = Publisher(Settings(), "kc-test")
    publisher._producer = _StuckProducer()  # aiokafka is untyped here: any object passes
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match=r"did not take the tasks within 0\.2 s"):
        await publisher.publish([_task()], timeout_s=0.2)
    assert time.monotonic() - started < 1
