"""Liveness: a coordinator that is not there yet is a passing state, not a warning."""

from __future__ import annotations

import logging

import pytest
from aiokafka.errors import (
    GroupCoordinatorNotAvailableError,
    KafkaConnectionError,
    KafkaError,
)

from producer.frontend.liveness import Liveness
from schemas.settings import Settings


class _Admin:
    def __init__(self, error: KafkaError) -> None:
        self.error = error

    async def find_coordinator(self, group: str) -> int:
        raise self.error


@pytest.mark.parametrize(
    ("error", "level"),
    [
        (GroupCoordinatorNotAvailableError(), logging.DEBUG),
        (KafkaConnectionError(), logging.WARNING),
    ],
    ids=["fresh-broker", "broker-gone"],
)
async def test_a_failed_refresh_is_logged_by_what_it_means(
    caplog: pytest.LogCaptureFixture, error: KafkaError, level: int
) -> None:
    liveness = Liveness(Settings(api_keys="k"), ["echo"])
    liveness._admin = _Admin(error)
    with caplog.at_level(logging.DEBUG, logger="producer.frontend.liveness"):
        await liveness._refresh_logged()
    assert [r.levelno for r in caplog.records] == [level]
    assert not liveness.ready
