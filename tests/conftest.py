"""Shared fixtures: one real Kafka broker per session, fresh topics and settings per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from schemas.settings import Settings
from tests.kafka_fixture import jar_cache_dir, kafka_broker

API_KEY = "kc-test-key-5f3b0c"
# The request body of the API specification's example (docs/API.md), verbatim.
SPEC_EXAMPLE: dict[str, Any] = {
    "prompt": "Once upon a time",
    "model": ["gpt-4", "llama-2-70b"],
    "max_tokens": 50,
    "temperature": 0.7,
    "top_p": 0.8,
    "stop": ["."],
    "presence_penalty": 0.5,
    "frequency_penalty": -0.5,
}


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real broker for the whole session (explicit address, Docker, or local jars)."""
    with kafka_broker(tmp_path_factory.mktemp("kafka")) as bootstrap:
        yield bootstrap


def make_settings(kafka_bootstrap: str, **overrides: Any) -> Settings:
    """Settings on a test broker with a topic prefix of their own, small and quick to react."""
    base: dict[str, Any] = {
        "kafka_bootstrap": kafka_bootstrap,
        "topic_prefix": f"t{uuid.uuid4().hex[:10]}.",
        "request_partitions": 2,
        "results_partitions": 2,
        "api_keys": (SecretStr(API_KEY),),
        "request_timeout_s": 60,
        "liveness_refresh_s": 0.3,
        "cache_dir": cache_dir(),
        "worker_metrics_port": 0,
        "drain_timeout_s": 10,
    }
    return Settings(**(base | overrides))


@pytest.fixture
def settings(kafka_bootstrap: str) -> Settings:
    """Settings on the session broker with a topic prefix of this test's own."""
    return make_settings(kafka_bootstrap)


def cache_dir() -> Path:
    """The converted model and the broker jars, shared by every run on this machine."""
    return jar_cache_dir()
