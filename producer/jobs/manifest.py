"""Job manifests: one record per job on the compacted jobs topic, keyed by job id.

A manifest says what a job is (lines, tasks per model, a digest of its content, its deadline)
and how far its submission got: ``publishing`` while tasks are being sent, ``submitted`` once
Kafka has them all. The last record of a job id is its manifest (compaction keeps only it).
"""

from __future__ import annotations

import time
from contextlib import aclosing
from typing import Annotated, Literal

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from producer.jobs.scan import TopicMissing, scan
from schemas.errors import BrokerUnavailable
from schemas.settings import Settings
from schemas.topics import Topics
from schemas.wire import encode

JobState = Literal["publishing", "submitted"]
JobId = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:-]+$")]


class JobManifest(BaseModel):
    """What one bulk job is, and how far its submission got."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = 1
    job_id: JobId
    digest: str
    lines: int
    tasks: int
    models: dict[str, int]
    skipped: int = 0
    state: JobState
    submitted_at: float
    updated_at: float
    deadline: float | None = None
    retries: int = 0
    # Error results stamped at or before this (Kafka record time, ms) were resubmitted by
    # ``--retry-failed``: their lines count as pending again until a newer result arrives.
    retry_cutoff_ms: int | None = None

    def moved(self, **changes: object) -> JobManifest:
        """A copy with ``changes`` and a fresh ``updated_at``."""
        return self.model_copy(update={**changes, "updated_at": time.time()})


async def write_manifest(producer: AIOKafkaProducer, settings: Settings, m: JobManifest) -> None:
    """Put a job's manifest on the jobs topic and wait for Kafka to have it."""
    topic = Topics(settings.topic_prefix).jobs
    try:
        await producer.send_and_wait(topic, encode(m), m.job_id.encode())
    except KafkaError as exc:
        raise BrokerUnavailable(f"Kafka did not take the manifest of {m.job_id}: {exc!r}") from exc


async def read_manifests(settings: Settings) -> dict[str, JobManifest]:
    """Every job's latest manifest, read from the beginning of the jobs topic to its end."""
    manifests: dict[str, JobManifest] = {}
    try:
        async with aclosing(scan(settings, [Topics(settings.topic_prefix).jobs])) as batches:
            async for batch in batches:
                for record in batch:
                    try:
                        m = JobManifest.model_validate_json(record.value or b"")
                    except ValidationError:
                        continue  # a tombstone or a foreign record: not a job of ours
                    manifests[m.job_id] = m
    except TopicMissing:
        return {}  # nothing was ever submitted under this prefix
    return manifests
