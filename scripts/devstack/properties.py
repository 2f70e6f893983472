"""``server.properties`` of the local node: one PLAINTEXT listener, and the secured ones asked for.

Besides PLAINTEXT (which the broker also uses for its own inter-broker traffic), a node can
listen for ``SASL_PLAINTEXT`` (SCRAM-SHA-512), ``SSL`` and ``SASL_SSL`` clients, each on its
own port; a listener is named after its protocol. The server side of SCRAM needs only the
login module (the credentials live in the metadata log, written by ``format --add-scram``);
TLS needs the broker's keystore (``devstack.certs`` makes one). Clients are not asked for a
certificate (``ssl.client.auth`` stays ``none``).

The replication settings matter: on one node the defaults (3 replicas, min ISR 2) keep the
internal topics from being created, and consumer groups and transactions then retry forever.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
SCRAM_MECHANISM = "SCRAM-SHA-512"


def new_cluster_id() -> str:
    """Return a random Kafka cluster id (base64url of a random UUID, like StorageTool's)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        # Kafka's Uuid.randomUuid() skips ids starting with '-': they read as CLI options.
        if not text.startswith("-"):
            return text


SECURED = ("SASL_PLAINTEXT", "SSL", "SASL_SSL")


@dataclass(frozen=True)
class BrokerKeystore:
    """The broker's PKCS12 keystore: its key and the certificate the CA signed."""

    path: Path
    password: str


def server_properties(
    log_dirs: Path,
    port: int,
    controller_port: int,
    secured: Mapping[str, int] | None = None,
    keystore: BrokerKeystore | None = None,
) -> str:
    """server.properties for a combined broker+controller node on 127.0.0.1.

    ``secured`` maps each extra listener's protocol (one of ``SECURED``) to its port.
    """
    extra = dict(secured or {})
    if any(p.endswith("SSL") for p in extra) and keystore is None:
        raise ValueError("an SSL listener needs the broker's keystore")
    urls = "".join(f",{p}://{HOST}:{extra[p]}" for p in extra)
    protocols = "".join(f",{p}:{p}" for p in extra)
    lines = [
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@{HOST}:{controller_port}",
        f"listeners=PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}{urls}",
        f"advertised.listeners=PLAINTEXT://{HOST}:{port}{urls}",
        "inter.broker.listener.name=PLAINTEXT",
        "controller.listener.names=CONTROLLER",
        f"listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT{protocols}",
        f"log.dirs={log_dirs}",
        # One node: the defaults (3 replicas, min ISR 2) would block the internal topics.
        "offsets.topic.replication.factor=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "offsets.topic.num.partitions=1",
        "transaction.state.log.num.partitions=1",
        *_sasl(extra),
        *_tls(keystore if any(p.endswith("SSL") for p in extra) else None),
    ]
    return "\n".join(lines) + "\n"


def _sasl(protocols: Mapping[str, int]) -> list[str]:
    sasl = [p for p in protocols if p.startswith("SASL_")]
    if not sasl:
        return []
    login = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    mechanism = SCRAM_MECHANISM.lower()
    return [
        f"sasl.enabled.mechanisms={SCRAM_MECHANISM}",
        *(f"listener.name.{p.lower()}.{mechanism}.sasl.jaas.config={login}" for p in sasl),
    ]


def _tls(keystore: BrokerKeystore | None) -> list[str]:
    if keystore is None:
        return []
    return [
        f"ssl.keystore.location={keystore.path}",
        "ssl.keystore.type=PKCS12",
        f"ssl.keystore.password={keystore.password}",
        f"ssl.key.password={keystore.password}",
    ]
