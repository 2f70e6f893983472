"""A topic in memory, standing in for the producer of a book that writes records."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sent:
    """What ``send_and_wait`` answers: the record's offset."""

    offset: int


@dataclass
class MemoryTopic:
    """Takes ``send_and_wait`` calls and keeps every record, in offset order."""

    records: list[tuple[str, bytes | None, bytes]] = field(default_factory=list)

    async def send_and_wait(self, topic: str, value: bytes, key: bytes | None = None) -> Sent:
        """Append the record; its offset is its place."""
        self.records.append((topic, key, value))
        return Sent(len(self.records) - 1)

    async def stop(self) -> None:
        """Nothing to flush."""

    def everything(self) -> bytes:
        """Every key and value written, as one byte string (to look for what must be absent)."""
        return b"\n".join((key or b"") + b" " + value for _, key, value in self.records)
