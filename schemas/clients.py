"""The one factory of Kafka clients: every producer, consumer and admin client is built here.

Each gets the connection options of the settings (bootstrap, client id, SASL, TLS) and the
service's defaults (producers idempotent with ``acks=all``; consumers never auto-commit:
offsets are committed in transactions or not kept), so a security setting or a default
changes in one place. Build clients inside a running event loop: aiokafka binds them to it.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.structs import RecordMetadata

from schemas.errors import BrokerUnavailable, ConfigError
from schemas.logs import translated
from schemas.settings import Settings


async def delivered(sends: Iterable[asyncio.Future[RecordMetadata]]) -> list[RecordMetadata]:
    """Wait for every send of a producer; the first failure is raised once all are settled, so
    no send is left failed with nobody to read it (asyncio logs each such one with a traceback).
    """
    outcomes = await asyncio.gather(*sends, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return [o for o in outcomes if isinstance(o, RecordMetadata)]


def producer(settings: Settings, client_id: str, **options: Any) -> AIOKafkaProducer:
    """An idempotent producer acknowledged by every in-sync replica; ``options`` override."""
    defaults: dict[str, Any] = {"acks": "all", "enable_idempotence": True}
    return AIOKafkaProducer(**(defaults | options | client_options(settings, client_id)))


def transactional_producer(
    settings: Settings, client_id: str, transactional_id: str, **options: Any
) -> AIOKafkaProducer:
    """A producer whose sends and offset commits go in transactions under ``transactional_id``."""
    return producer(settings, client_id, transactional_id=transactional_id, **options)


def consumer(
    settings: Settings, client_id: str, *topics: str, committed_only: bool = False, **options: Any
) -> AIOKafkaConsumer:
    """A consumer of ``topics`` (or none: assign later) that never auto-commits offsets.

    ``committed_only`` reads committed records only (``read_committed``), as every reader of
    the transactional results must.
    """
    isolation = "read_committed" if committed_only else "read_uncommitted"
    defaults: dict[str, Any] = {"enable_auto_commit": False, "isolation_level": isolation}
    return AIOKafkaConsumer(*topics, **(defaults | options | client_options(settings, client_id)))


def admin(settings: Settings, client_id: str, **options: Any) -> AIOKafkaAdminClient:
    """An admin client (topics, consumer groups)."""
    return AIOKafkaAdminClient(**(options | client_options(settings, client_id)))


def client_options(settings: Settings, client_id: str) -> dict[str, Any]:
    """Connection options shared by every aiokafka client of this service."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "client_id": client_id,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = password.get_secret_value() if password else None
    if settings.kafka_security_protocol.endswith("SSL"):
        options["ssl_context"] = ssl_context(settings)
    return options


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """The TLS context for Kafka: the system's CAs unless KC_KAFKA_SSL_CAFILE names one."""
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot build the Kafka TLS context from KC_KAFKA_SSL_CAFILE="
            f"{settings.kafka_ssl_cafile}, KC_KAFKA_SSL_CERTFILE={settings.kafka_ssl_certfile}, "
            f"KC_KAFKA_SSL_KEYFILE={settings.kafka_ssl_keyfile}: {exc}"
        ) from exc
    return context


async def check_credentials(settings: Settings) -> None:
    """Raise ConfigError when the first bootstrap broker refuses our SASL or TLS handshake."""
    # aiokafka logs an authentication failure and reports only "Unable to bootstrap", so a
    # wrong password would read like a broker that is down; one direct connection tells.
    if settings.kafka_security_protocol == "PLAINTEXT":
        return
    host, _, port = settings.kafka_bootstrap.split(",")[0].strip().rpartition(":")
    options = client_options(settings, "kc-credentials-check")
    del options["bootstrap_servers"]
    try:
        conn = await create_conn(host, int(port), request_timeout_ms=10_000, **options)
    except ssl.SSLCertVerificationError as exc:
        raise ConfigError(
            f"Kafka at {host}:{port} presented a TLS certificate we do not trust "
            f"({exc.verify_message}): KC_KAFKA_SSL_CAFILE={settings.kafka_ssl_cafile} must "
            "hold the CA that signed the brokers' certificates (unset: the system's CAs)"
        ) from exc
    except (AuthenticationFailedError, SaslAuthenticationFailed, ssl.SSLError) as exc:
        raise ConfigError(
            f"Kafka at {host}:{port} refused to authenticate us "
            f"(KC_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol}, "
            f"KC_KAFKA_SASL_MECHANISM={settings.kafka_sasl_mechanism}, "
            f"KC_KAFKA_SASL_USERNAME={settings.kafka_sasl_username}): {exc}; "
            "check KC_KAFKA_SASL_PASSWORD and the KC_KAFKA_SSL_* files"
        ) from exc
    except (KafkaError, OSError, ValueError):
        return  # not a credential problem: the caller reports the broker as unreachable
    conn.close()


def unreachable(settings: Settings, exc: BaseException) -> BrokerUnavailable:
    """The one-line refusal of a process that cannot reach Kafka, naming the setting."""
    reason = "no broker answered" if isinstance(exc, KafkaConnectionError) else repr(exc)
    return BrokerUnavailable(
        f"KC_KAFKA_BOOTSTRAP={settings.kafka_bootstrap}: cannot reach Kafka ({reason}); "
        "start the local broker (kafka-completions broker start) or point KC_KAFKA_BOOTSTRAP "
        "at a running one"
    )


async def check_broker(settings: Settings) -> None:
    """Raise ConfigError for refused credentials, BrokerUnavailable when no broker answers."""
    await check_credentials(settings)
    probe = admin(settings, "kc-broker-check")
    try:
        with translated("aiokafka"):
            await probe.start()
    except KafkaError as exc:
        raise unreachable(settings, exc) from exc
    finally:
        await probe.close()
