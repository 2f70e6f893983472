"""The local broker's ``server.properties``: one node, broker and controller, on 127.0.0.1.

The replication settings matter: on one node the defaults (3 replicas, min ISR 2) keep the
internal topics from being created, and consumer groups and transactions then retry forever.
"""

from __future__ import annotations

import base64
import uuid
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


def server_properties(
    log_dirs: Path, port: int, controller_port: int, sasl_port: int | None = None
) -> str:
    """Return server.properties for a combined broker+controller node on 127.0.0.1."""
    if sasl_port is not None:
        return _with_sasl(server_properties(log_dirs, port, controller_port), sasl_port)
    lines = [
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@{HOST}:{controller_port}",
        f"listeners=PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        f"advertised.listeners=PLAINTEXT://{HOST}:{port}",
        "inter.broker.listener.name=PLAINTEXT",
        "controller.listener.names=CONTROLLER",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
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
    ]
    return "\n".join(lines) + "\n"


def _with_sasl(properties: str, sasl_port: int) -> str:
    # A second client listener, SASL_PLAINTEXT with SCRAM-SHA-512; the PLAINTEXT one stays for
    # the broker's own (inter-broker) traffic. The server side of SCRAM needs only the login
    # module: the credentials live in the metadata log (written by ``format --add-scram``).
    sasl = f"SASL_PLAINTEXT://{HOST}:{sasl_port}"
    lines = []
    for line in properties.splitlines():
        key = line.partition("=")[0]
        if key in ("listeners", "advertised.listeners"):
            line = f"{line},{sasl}"
        elif key == "listener.security.protocol.map":
            line = f"{line},SASL_PLAINTEXT:SASL_PLAINTEXT"
        lines.append(line)
    lines += [
        f"sasl.enabled.mechanisms={SCRAM_MECHANISM}",
        "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required;",
    ]
    return "\n".join(lines) + "\n"
