"""Files on Kafka: content in chunks on a compacted topic, metadata on another.

A file's content is cut into chunks under the broker's ``message.max.bytes`` (1 MB by
default) and produced, in order, to the compacted chunks topic under keys unique to the
upload; the metadata record (compacted files topic, keyed by file id) lists each chunk's
partition and offset. Compaction never moves an offset and never removes a record whose key
was not written again, so reading a file is a seek to its first chunk and a read of its own
records: the cost follows the file, not what else the topic holds. Every front-end instance
reads the same records, and they survive restarts. Deleting writes tombstones for the
metadata and every chunk, and compaction then frees the space.
"""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from schemas import clients
from schemas.batch import ChunkRef, FileRecord
from schemas.errors import BrokerUnavailable
from schemas.settings import Settings
from schemas.topics import Topics
from schemas.wire import encode

CHUNK_BYTES = 512 * 1024  # half the broker's default message.max.bytes, headers included
_READ_WAIT_S = 30.0


class FileStore:
    """Puts, reads and deletes file content and metadata, through one producer."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer) -> None:
        self._settings = settings
        self._topics = Topics(settings.topic_prefix)
        self._producer = producer

    async def put(self, record: FileRecord, content: bytes) -> FileRecord:
        """Store ``content`` and then the metadata that points at it; the record as stored."""
        upload = uuid.uuid4().hex[:12]  # two uploads of one id never share a chunk key
        try:
            sends = [
                await self._producer.send(
                    self._topics.file_chunks,
                    content[start : start + CHUNK_BYTES],
                    f"{record.id}:{upload}:{n}".encode(),
                )
                for n, start in enumerate(range(0, len(content), CHUNK_BYTES))
            ]
            placed = await clients.delivered(sends)
            chunks = tuple(ChunkRef(partition=m.partition, offset=m.offset) for m in placed)
            stored = record.model_copy(update={"chunks": chunks, "upload": upload})
            await self._producer.send_and_wait(
                self._topics.files, encode(stored), record.id.encode()
            )
        except KafkaError as exc:
            raise BrokerUnavailable(f"Kafka did not take the file {record.id}: {exc!r}") from exc
        return stored

    async def read(self, record: FileRecord) -> bytes:
        """The content of a stored file, read from its own chunks."""
        return b"".join(await read_chunks(self._settings, record.chunks))

    async def delete(self, record: FileRecord) -> None:
        """Tombstones for the metadata and every chunk of a file."""
        keys = [f"{record.id}:{record.upload}:{n}" for n in range(len(record.chunks))]
        try:
            for key in keys:
                await self._producer.send(self._topics.file_chunks, None, key.encode())
            await self._producer.send_and_wait(self._topics.files, None, record.id.encode())
        except KafkaError as exc:
            raise BrokerUnavailable(f"Kafka did not take the deletion of {record.id}") from exc


async def read_chunks(settings: Settings, chunks: tuple[ChunkRef, ...]) -> list[bytes]:
    """The values at ``chunks`` (partition, offset), in their order."""
    if not chunks:
        return []
    topic = Topics(settings.topic_prefix).file_chunks
    wanted = {(c.partition, c.offset): i for i, c in enumerate(chunks)}
    values: list[bytes | None] = [None] * len(chunks)
    consumer = clients.consumer(settings, "kc-files")
    try:
        await consumer.start()
        for partition in sorted({c.partition for c in chunks}):
            tp = TopicPartition(topic, partition)
            first = min(c.offset for c in chunks if c.partition == partition)
            last = max(c.offset for c in chunks if c.partition == partition)
            consumer.assign([tp])
            consumer.seek(tp, first)
            await _read_until(consumer, tp, last, wanted, values)
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot read file content from {topic}: {exc!r}") from exc
    finally:
        await consumer.stop()
    missing = [i for i, v in enumerate(values) if v is None]
    if missing:
        raise BrokerUnavailable(f"{len(missing)} chunk(s) of the file are gone from {topic}")
    return [v for v in values if v is not None]


async def _read_until(
    consumer: AIOKafkaConsumer,
    tp: TopicPartition,
    last: int,
    wanted: dict[tuple[int, int], int],
    values: list[bytes | None],
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _READ_WAIT_S
    while await consumer.position(tp) <= last:
        if loop.time() > deadline:
            raise BrokerUnavailable(f"reading {tp.topic} up to offset {last} took too long")
        batch = await consumer.getmany(tp, timeout_ms=500)
        for record in batch.get(tp, []):
            index = wanted.get((tp.partition, record.offset))
            if index is not None:
                values[index] = record.value
