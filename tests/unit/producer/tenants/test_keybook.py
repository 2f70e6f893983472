"""The key book without a broker: keys checked by hash, records written and read back in order."""

from __future__ import annotations

import time

import pytest
from aiokafka import ConsumerRecord

from producer.tenants.keybook import KeyBook
from schemas.errors import KeyConflict, UnknownKey
from schemas.keys import KeyLimits, KeyRecord, key_hash, key_id
from schemas.settings import Settings
from tests.unit.producer.tenants.topic import MemoryTopic


@pytest.fixture
def topic() -> MemoryTopic:
    """Where the book writes."""
    return MemoryTopic()


@pytest.fixture
def book(topic: MemoryTopic) -> KeyBook:
    """A book whose writer is the topic in memory (its reader never runs)."""
    keys = KeyBook(Settings())
    keys._producer = topic
    return keys


def _read(book: KeyBook, record: KeyRecord | None, offset: int, found: str = "") -> None:
    """Hand the book a record as its reader would (None: a tombstone)."""
    value = record.model_dump_json().encode() if record is not None else None
    message = ConsumerRecord(
        "completions.keys",
        0,
        offset,
        0,
        0,
        (record.key_id if record is not None else found).encode(),
        value,
        None,
        0,
        0,
        [],
    )
    book._take(message)


async def test_a_generated_key_is_accepted_and_only_its_hash_is_written(
    book: KeyBook, topic: MemoryTopic
) -> None:
    key, record = await book.generate(KeyLimits(models=("echo",)), key_alias="team-a")
    assert key.startswith("sk-kc-") and len(key) > 40
    assert book.check(key) == key_id(key) == record.key_id
    assert record.hash == key_hash(key) and record.key_name == f"sk-kc-...{key[-4:]}"
    assert key.encode() not in topic.everything()
    assert key_hash(key).encode() in topic.everything()
    (written,) = topic.records
    assert written[0] == "completions.keys" and written[1] == record.key_id.encode()


async def test_a_wrong_or_revoked_or_expired_key_is_refused(book: KeyBook) -> None:
    key, record = await book.generate(KeyLimits())
    assert book.check(key + "x") is None
    assert book.check(key[:-1]) is None
    assert book.check("sk-kc-" + "A" * 43) is None
    # Same key id, another hash: the whole hash decides.
    book.records[record.key_id] = record.model_copy(update={"hash": "0" * 64})
    assert book.check(key) is None
    book.records[record.key_id] = record.model_copy(update={"expires": time.time() - 1})
    assert book.check(key) is None
    book.records[record.key_id] = record
    await book.revoke([record.key_id])
    assert book.check(key) is None
    assert book.get(record.key_id) is not None and book.get(record.key_id).revoked_at  # type: ignore[union-attr]


async def test_a_key_is_found_by_its_id_its_hash_or_itself(book: KeyBook) -> None:
    key, record = await book.generate(KeyLimits())
    assert book.find(key) == book.find(record.key_id) == book.find(key_hash(key)) == record
    with pytest.raises(UnknownKey) as refused:
        book.find("sk-kc-" + "B" * 43)
    assert "sk-kc-" not in str(refused.value), "an error never names the key"
    await book.revoke([record.key_id])
    with pytest.raises(UnknownKey, match=record.key_id):
        book.find(key)


async def test_update_changes_the_fields_given_and_null_clears(book: KeyBook) -> None:
    key, record = await book.generate(KeyLimits(models=("echo",), rpm_limit=5))
    changed = await book.update(record.key_id, {"models": ["echo", "gpt-4"], "rpm_limit": None})
    assert changed.models == ("echo", "gpt-4") and changed.rpm_limit is None
    assert changed.created_at == record.created_at and changed.updated_at >= record.updated_at
    later = await book.update(record.key_id, {"duration": "1h", "metadata": {"team": "a"}})
    assert later.expires is not None and 3590 < later.expires - time.time() <= 3600
    assert later.metadata == {"team": "a"} and later.models == ("echo", "gpt-4")
    assert book.check(key) == record.key_id
    with pytest.raises(UnknownKey):
        await book.update("0" * 16, {"rpm_limit": 1})


async def test_an_alias_names_one_key_and_a_custom_key_one_record(book: KeyBook) -> None:
    _, first = await book.generate(KeyLimits(), key_alias="team-a")
    with pytest.raises(KeyConflict, match="team-a"):
        await book.generate(KeyLimits(), key_alias="team-a")
    _, second = await book.generate(KeyLimits(), key_alias="team-b")
    with pytest.raises(KeyConflict):
        await book.update(second.key_id, {"key_alias": "team-a"})
    custom = "sk-migrated-0123456789abcdef"
    key, record = await book.generate(KeyLimits(), key=custom)
    assert key == custom and record.key_name == "sk-...cdef"
    with pytest.raises(KeyConflict) as refused:
        await book.generate(KeyLimits(), key=custom)
    assert custom not in str(refused.value)
    # A revoked key frees its alias, but never its key id.
    await book.revoke([first.key_id, record.key_id])
    await book.generate(KeyLimits(), key_alias="team-a")
    with pytest.raises(KeyConflict):
        await book.generate(KeyLimits(), key=custom)


async def test_revoke_is_all_or_nothing(book: KeyBook, topic: MemoryTopic) -> None:
    _, record = await book.generate(KeyLimits())
    with pytest.raises(UnknownKey):
        await book.revoke([record.key_id, "f" * 16])
    assert len(topic.records) == 1 and book.records[record.key_id].revoked_at is None
    assert [r.key_id for r in book.listed()] == [record.key_id]
    await book.revoke([record.key_id])
    assert book.listed() == [] and [r.key_id for r in book.listed(revoked=True)] == [record.key_id]


async def test_a_late_older_record_never_undoes_a_newer_one(book: KeyBook) -> None:
    key, created = await book.generate(KeyLimits())  # offset 0
    (revoked,) = await book.revoke([created.key_id])  # offset 1, applied at once
    _read(book, created, 0)  # the reader sees the creation only now
    assert book.check(key) is None
    _read(book, revoked, 1)
    assert book.records[created.key_id].revoked_at is not None


def test_records_from_the_topic_are_taken_and_tombstones_remove(book: KeyBook) -> None:
    now = time.time()
    key = "sk-kc-" + "C" * 43
    record = KeyRecord(
        key_id=key_id(key),
        hash=key_hash(key),
        key_name="sk-kc-...CCCC",
        created_at=now,
        updated_at=now,
    )
    _read(book, record, 7)
    assert book.check(key) == record.key_id
    book._take(ConsumerRecord("t", 0, 8, 0, 0, b"x", b"not json", None, 0, 0, []))
    assert book.check(key) == record.key_id
    _read(book, None, 9, record.key_id)
    assert book.check(key) is None and book.get(record.key_id) is None
