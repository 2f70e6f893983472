"""Fixtures of the reliability scenarios."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from devstack.broker import LocalBroker
from devstack.process import free_port

from tests.kafka_fixture import jar_cache_dir


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A broker of this test's own on ports chosen once, so a restart keeps its address."""
    broker = LocalBroker(
        tmp_path / "broker", jar_cache_dir(), port=free_port(), controller_port=free_port()
    )
    with broker:
        yield broker
