"""What each topic of a local broker took in between two snapshots: offsets and bytes.

Offsets are read from the broker (end offsets, every partition), so a transactional topic's
count includes its commit markers: that is what the broker writes and replicates. Bytes are
the size of the partitions' ``.log`` segments in the broker's log directory: record batches
as stored (headers, keys, values, batch overhead), before replication. A short run rolls no
segment and compacts nothing, so the difference of two snapshots is what was written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aiokafka import TopicPartition

from schemas import clients
from schemas.settings import Settings

_METADATA_LOG = "__cluster_metadata"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Per topic: the sum of its partitions' end offsets, and its segments' bytes."""

    offsets: dict[str, int]
    bytes: dict[str, int]


def _partitions(log_dir: Path) -> dict[TopicPartition, Path]:
    found = {}
    for folder in log_dir.iterdir():
        topic, dash, index = folder.name.rpartition("-")
        # KRaft's own metadata log lives here too, but is no topic a client can list.
        if folder.is_dir() and dash and index.isdigit() and topic != _METADATA_LOG:
            found[TopicPartition(topic, int(index))] = folder
    return found


async def snapshot(bootstrap: str, log_dir: Path) -> Snapshot:
    """Every topic's offsets and bytes now."""
    partitions = _partitions(log_dir)
    consumer = clients.consumer(Settings(kafka_bootstrap=bootstrap), "kc-capacity-offsets")
    await consumer.start()
    try:
        ends = await consumer.end_offsets(list(partitions))
    finally:
        await consumer.stop()
    offsets: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for tp, folder in partitions.items():
        offsets[tp.topic] = offsets.get(tp.topic, 0) + ends[tp]
        written = sum(f.stat().st_size for f in folder.glob("*.log"))
        sizes[tp.topic] = sizes.get(tp.topic, 0) + written
    return Snapshot(offsets, sizes)


def per_topic(
    before: Snapshot, after: Snapshot, seconds: float, requests: int, prefix: str
) -> list[dict[str, object]]:
    """Rows of records/s, bytes/s, records and bytes per request, for topics that grew."""
    rows: list[dict[str, object]] = []
    for topic in sorted(after.offsets):
        records = after.offsets[topic] - before.offsets.get(topic, 0)
        size = after.bytes[topic] - before.bytes.get(topic, 0)
        if records <= 0 and size <= 0:
            continue
        rows.append(
            {
                "topic": topic.removeprefix(prefix),
                "records_per_s": round(records / seconds, 1),
                "bytes_per_s": round(size / seconds),
                "records_per_request": round(records / max(requests, 1), 3),
                "bytes_per_request": round(size / max(requests, 1), 1),
            }
        )
    return rows
