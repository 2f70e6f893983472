"""The key book: every front end's copy of the managed keys, read from the keys topic.

The compacted keys topic holds one ``KeyRecord`` per key id: the key's SHA-256, never the key.
Every front end (and the CLI) reads it whole at start-up and follows it, so a key created,
changed or revoked anywhere is known everywhere about one poll later (``Table``: 100 ms). A
writer applies its own record at once too, so the front end that answered a change acts on it
before its reader sees it come back.

A revoked key keeps its record (``revoked_at``), not a tombstone: its usage stays attributable
and its key id is never handed out again.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from producer.tenants.table import Table
from schemas import clients
from schemas.errors import BrokerUnavailable, KeyConflict, UnknownKey
from schemas.kafka import Record, ensure_topics
from schemas.keys import KeyLimits, KeyRecord, duration_s, key_hash, key_id, new_key, shown_name
from schemas.settings import Settings
from schemas.topics import Topics

log = logging.getLogger(__name__)
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")
_HASH = re.compile(r"^[0-9a-f]{64}$")


class KeyBook:
    """The managed keys as the keys topic says, kept current by one background reader."""

    def __init__(self, settings: Settings) -> None:
        self.records: dict[str, KeyRecord] = {}
        self._settings = settings
        self._topic = Topics(settings.topic_prefix).keys
        # The offset each key's record was read or written at: an older record read late
        # (a writer's own, still on its way back) never undoes a newer one.
        self._offsets: dict[str, int] = {}
        self._table = Table(settings, "kc-key-book", self._topic, self._take)
        self._producer: AIOKafkaProducer | None = None

    @property
    def ready(self) -> bool:
        """Whether the keys the topic held at start-up have been read."""
        return self._table.ready

    async def start(self) -> None:
        """Connect the writer and start reading (the topic exists: ``ensure_topics``)."""
        producer = clients.producer(self._settings, "kc-keys", linger_ms=0)
        try:
            await producer.start()
            self._producer = producer
            await self._table.start()
        except KafkaError as exc:
            raise BrokerUnavailable(f"cannot read the keys topic {self._topic}: {exc!r}") from exc

    async def loaded(self, timeout_s: float = 30.0) -> None:
        """Wait until ``ready`` (the CLI reads the keys once, then answers)."""
        await self._table.loaded(timeout_s)

    async def stop(self) -> None:
        """Stop reading, flush the writer."""
        await self._table.stop()
        if self._producer is not None:
            await self._producer.stop()

    # Reading

    def check(self, token: str) -> str | None:
        """The key id of a live managed key, or None (``producer.frontend.auth.ManagedKeys``)."""
        found = key_id(token)
        record = self.records.get(found)
        # The id is the hash's first 16 digits: the whole hash decides, in constant time.
        if record is None or not hmac.compare_digest(record.hash, key_hash(token)):
            return None
        return found if record.live(time.time()) else None

    def get(self, found: str) -> KeyRecord | None:
        """The record of a key id (live or not), or None for a key that is not managed."""
        return self.records.get(found)

    def find(self, ref: str) -> KeyRecord:
        """The unrevoked key a request names: by its key id, LiteLLM's token (its SHA-256), or
        the key itself. Raises UnknownKey naming the key id, never the key."""
        if _KEY_ID.match(ref):
            wanted, digest = ref, None
        elif _HASH.match(ref):
            wanted, digest = ref[:16], ref
        else:
            wanted, digest = key_id(ref), key_hash(ref)
        record = self.records.get(wanted)
        if (
            record is not None
            and digest is not None
            and not hmac.compare_digest(record.hash, digest)
        ):
            raise UnknownKey(f"no managed key with key id {wanted}", "key")
        return self._known(wanted)

    def with_alias(self, alias: str) -> list[KeyRecord]:
        """The unrevoked keys of an alias (one, unless two front ends took it at one moment)."""
        return [r for r in self.records.values() if r.key_alias == alias and r.revoked_at is None]

    def listed(self, *, revoked: bool = False) -> list[KeyRecord]:
        """Every unrevoked key (expired ones too), newest first; ``revoked``: those as well."""
        chosen = [r for r in self.records.values() if revoked or r.revoked_at is None]
        return sorted(chosen, key=lambda r: (r.created_at, r.key_id), reverse=True)

    # Writing

    async def generate(
        self,
        limits: KeyLimits,
        *,
        key_alias: str | None = None,
        metadata: dict[str, Any] | None = None,
        duration: str | None = None,
        key: str | None = None,
    ) -> tuple[str, KeyRecord]:
        """Make a key (``key``: a custom one), write its record; the key is returned once."""
        key = key or new_key()
        found = key_id(key)
        if found in self.records:
            # A custom key taken already (revoked ones too: an id is never handed out twice).
            raise KeyConflict(f"the key with key id {found} exists already; choose another", "key")
        self._check_alias(key_alias, None)
        now = time.time()
        record = KeyRecord(
            **limits.model_dump(),
            key_id=found,
            hash=key_hash(key),
            key_name=shown_name(key),
            key_alias=key_alias,
            metadata=metadata or {},
            created_at=now,
            updated_at=now,
            expires=now + duration_s(duration) if duration else None,
        )
        await self._write(record)
        log.info("managed key %s created (%s)", found, key_alias or "no alias")
        return key, record

    async def update(self, found: str, changes: dict[str, Any]) -> KeyRecord:
        """Change an unrevoked key's fields (``duration``: expires that long from now; an
        expired key lives again), write it."""
        current = self._known(found)
        fields = dict(changes)
        if "duration" in fields:
            duration = fields.pop("duration")
            fields["expires"] = time.time() + duration_s(duration) if duration else None
        if "key_alias" in fields:
            self._check_alias(fields["key_alias"], found)
        if "metadata" in fields and fields["metadata"] is None:
            fields["metadata"] = {}
        if "models" in fields and fields["models"] is None:
            fields["models"] = ()
        fields["updated_at"] = time.time()
        record = KeyRecord.model_validate(current.model_dump() | fields)
        await self._write(record)
        log.info("managed key %s updated (%s)", found, ", ".join(sorted(changes)) or "nothing")
        return record

    async def revoke(self, found: Iterable[str]) -> list[KeyRecord]:
        """Revoke unrevoked keys by key id (every one known, or none), write their records."""
        now = time.time()
        records = [
            self._known(k).model_copy(update={"revoked_at": now, "updated_at": now})
            for k in dict.fromkeys(found)
        ]
        for record in records:
            await self._write(record)
            log.info("managed key %s revoked", record.key_id)
        return records

    def _known(self, found: str) -> KeyRecord:
        record = self.records.get(found)
        if record is None or record.revoked_at is not None:
            raise UnknownKey(f"no managed key with key id {found} (or it is revoked)", "key")
        return record

    def _check_alias(self, alias: str | None, owner: str | None) -> None:
        # Checked against this copy of the book: two front ends given one alias in the same
        # 100 ms may both take it (docs/tenants.md); delete by alias then revokes both.
        if alias is None:
            return
        taken = [r.key_id for r in self.with_alias(alias) if r.key_id != owner]
        if taken:
            raise KeyConflict(
                f"key_alias {alias!r} is taken by key {taken[0]}; an alias names one key",
                "key_alias",
            )

    async def _write(self, record: KeyRecord) -> None:
        if self._producer is None:
            raise RuntimeError("KeyBook.start() was not awaited")
        value = record.model_dump_json().encode()
        try:
            sent = await self._producer.send_and_wait(
                self._topic, value, key=record.key_id.encode()
            )
        except KafkaError as exc:
            raise BrokerUnavailable(
                f"cannot write key {record.key_id} to {self._topic}: {exc!r}; retry"
            ) from exc
        self._apply(record, sent.offset)

    def _take(self, message: Record) -> None:
        if message.value is None:  # a tombstone written by hand: that key is gone
            found = (message.key or b"").decode(errors="replace")
            self.records.pop(found, None)
            self._offsets[found] = message.offset
            return
        try:
            record = KeyRecord.model_validate_json(message.value or b"")
        except ValidationError:
            log.warning("keys topic offset %d: not a key record; skipped", message.offset)
            return
        self._apply(record, message.offset)

    def _apply(self, record: KeyRecord, offset: int) -> None:
        if offset < self._offsets.get(record.key_id, -1):
            return
        self._offsets[record.key_id] = offset
        self.records[record.key_id] = record


@asynccontextmanager
async def opened(settings: Settings, timeout_s: float = 60.0) -> AsyncIterator[KeyBook]:
    """A started key book that has read every key up to now (the CLI's)."""
    # A command against a running service: its topics are served; wait for none of them.
    await ensure_topics(settings, [], settle_all=False)
    book = KeyBook(settings)
    await book.start()
    try:
        try:
            await book.loaded(timeout_s)
        except TimeoutError as exc:
            raise BrokerUnavailable(f"the keys topic was not read in {timeout_s} s") from exc
        yield book
    finally:
        await book.stop()
