"""How every process reaches Kafka and lays out its topics (explicit partition counts)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from schemas.errors import BrokerUnavailable
from schemas.settings import Settings
from schemas.topics import Topics

log = logging.getLogger(__name__)
_TOPIC_ALREADY_EXISTS = 36


def client_options(settings: Settings, client_id: str) -> dict[str, Any]:
    """Connection options shared by every aiokafka client of this service."""
    return {"bootstrap_servers": settings.kafka_bootstrap, "client_id": client_id}


def topic_layout(settings: Settings, models: Iterable[str]) -> list[NewTopic]:
    """Every topic the service needs for these models, with its partition count and config."""
    topics = Topics(settings.topic_prefix)
    layout = [
        NewTopic(topics.results, settings.results_partitions, 1),
        NewTopic(topics.dlq, 1, 1),
        NewTopic(topics.jobs, 1, 1, topic_configs={"cleanup.policy": "compact"}),
    ]
    for model in models:
        layout.append(NewTopic(topics.requests(model), settings.request_partitions, 1))
        layout.append(NewTopic(topics.bulk(model), settings.request_partitions, 1))
    return layout


async def ensure_topics(settings: Settings, models: Iterable[str]) -> None:
    """Create the missing topics; existing ones are left as they are."""
    admin = AIOKafkaAdminClient(**client_options(settings, "kc-admin"))
    try:
        await admin.start()
        response = await admin.create_topics(topic_layout(settings, models))
    except KafkaError as exc:
        raise BrokerUnavailable(
            f"cannot create topics on Kafka at {settings.kafka_bootstrap}: {exc!r}; "
            "is the broker running (kafka-completions broker start) or KC_KAFKA_BOOTSTRAP right?"
        ) from exc
    finally:
        await admin.close()
    for name, code, *rest in response.topic_errors:
        if code not in (0, _TOPIC_ALREADY_EXISTS):
            raise BrokerUnavailable(f"cannot create topic {name}: error {code} {rest}")
