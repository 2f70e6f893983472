"""Submitting a bulk job: parse its file, record its manifest, publish its tasks.

Idempotence: a task's request id is derived from (job, custom_id, model), and a job's manifest
(on the compacted jobs topic) records a digest of its content and whether its submission
finished. Submitting a finished job again publishes nothing; a submission that was interrupted
publishes only the tasks with no result yet; the same job id with other content is refused.
Whatever is still answered twice (a task in flight when a submission was interrupted) is
counted once by the collector.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from tqdm import tqdm  # type: ignore[import-untyped]

from producer.jobs.jobfile import (
    JobError,
    JobFile,
    JobFileInvalid,
    LineProblem,
    default_job_id,
    parse_job_file,
    request_id,
)
from producer.jobs.manifest import JobManifest, read_manifests, write_manifest
from producer.jobs.status import tally_of
from producer.jobs.tally import Key
from schemas.errors import BrokerUnavailable
from schemas.kafka import client_options, ensure_topics
from schemas.registry import Registry, load_registry
from schemas.settings import Settings
from schemas.topics import Topics
from schemas.wire import Sampling, TaskMessage, encode

__all__ = ["SubmitReport", "submit"]

# The bulk producer trades latency for throughput: records wait up to _LINGER_MS to fill
# large, compressed batches (a job's prompts compress well; a broker round trip per record
# would cap a submission at a few hundred lines a second).
_LINGER_MS = 20
_BATCH_BYTES = 512 * 1024
_COMPRESSION = "gzip"
_CHUNK = 2000

Source = Path | str | Sequence[Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class SubmitReport:
    """What a submission published."""

    job_id: str
    published: int
    tasks: int
    skipped: list[LineProblem]
    note: str


async def submit(
    settings: Settings,
    source: Source,
    *,
    job_id: str | None = None,
    skip_invalid: bool = False,
    retry_failed: bool = False,
    deadline_s: float | None = None,
    registry: Registry | None = None,
    progress: bool = True,
) -> SubmitReport:
    """Validate every line, then publish the job's tasks to the bulk lanes (idempotently)."""
    data = _read_source(source)
    job = parse_job_file(data.decode("utf-8").splitlines(), registry or load_registry())
    if job.problems and not skip_invalid:
        raise JobFileInvalid(job.problems)
    if not job.lines:
        raise JobError("the job file has no valid line; nothing was published")
    job_id = job_id or default_job_id(data)
    existing = (await read_manifests(settings)).get(job_id)
    if existing is not None and existing.digest != job.digest:
        raise JobError(
            f"job {job_id} was submitted with other content (digest {existing.digest[:12]}); "
            "use another --job id, or submit the original file"
        )
    now = time.time()
    deadline = None if deadline_s is None else now + deadline_s
    if retry_failed:
        manifest, select, note = await _retry_plan(settings, job_id, existing, deadline)
    elif existing is None:
        manifest, select, note = _fresh(job, job_id, now, deadline), _every, "submitted"
    elif existing.state == "submitted":
        note = "already submitted: nothing published (--retry-failed resubmits failed lines)"
        return SubmitReport(job_id, 0, existing.tasks, job.problems, note)
    else:
        manifest, select, note = await _resume_plan(settings, existing)
    tasks = list(_tasks(job, job_id, select, now, manifest.deadline))
    await ensure_topics(settings, sorted(manifest.models))
    await _publish(settings, manifest, tasks, progress)
    return SubmitReport(job_id, len(tasks), manifest.tasks, job.problems, note)


def _every(_: Key) -> bool:
    return True


def _read_source(source: Source) -> bytes:
    if isinstance(source, Path | str):
        try:
            return Path(source).read_bytes()
        except OSError as exc:
            raise JobError(f"cannot read the job file {source}: {exc}") from exc
    return "".join(json.dumps(dict(line)) + "\n" for line in source).encode()


def _fresh(job: JobFile, job_id: str, now: float, deadline: float | None) -> JobManifest:
    models: dict[str, int] = {}
    for line in job.lines:
        for model in line.request.models:
            models[model] = models.get(model, 0) + 1
    return JobManifest(
        job_id=job_id,
        digest=job.digest,
        lines=len(job.lines),
        tasks=job.tasks,
        models=models,
        skipped=len(job.problems),
        state="publishing",
        submitted_at=now,
        updated_at=now,
        deadline=deadline,
    )


Select = Callable[[Key], bool]


async def _retry_plan(
    settings: Settings, job_id: str, existing: JobManifest | None, deadline: float | None
) -> tuple[JobManifest, Select, str]:
    if existing is None:
        raise JobError(f"no job {job_id!r} to retry; submit it first")
    tally = await tally_of(settings, existing)
    failed = tally.failed_keys()
    manifest = existing.moved(
        state="publishing",
        retries=existing.retries + 1,
        retry_cutoff_ms=max(tally.last_error_ms, existing.retry_cutoff_ms or 0),
        deadline=deadline,
    )
    return manifest, failed.__contains__, f"resubmitted {len(failed)} failed task(s)"


async def _resume_plan(
    settings: Settings, existing: JobManifest
) -> tuple[JobManifest, Select, str]:
    # An interrupted submission: publish again what has no result yet (some of it may be
    # on Kafka already; the collector counts a twice-answered task once).
    answered = set((await tally_of(settings, existing)).final)
    return existing, lambda key: key not in answered, "resumed an interrupted submission"


def _tasks(
    job: JobFile, job_id: str, select: Select, now: float, deadline: float | None
) -> Iterator[TaskMessage]:
    for line in job.lines:
        r = line.request
        sampling = Sampling.of_request(r)
        for index, model in enumerate(r.models):
            if not select((line.custom_id, model)):
                continue
            yield TaskMessage(
                request_id=request_id(job_id, line.custom_id, model),
                choice_index=index,
                model=model,
                prompt=r.prompt,
                sampling=sampling,
                enqueued_at=now,
                deadline=deadline,
                lane="bulk",
                job_id=job_id,
                custom_id=line.custom_id,
            )


async def _publish(
    settings: Settings, manifest: JobManifest, tasks: list[TaskMessage], progress: bool
) -> None:
    """Manifest (publishing), every task, manifest (submitted): each acknowledged by Kafka."""
    topics = Topics(settings.topic_prefix)
    producer = AIOKafkaProducer(
        acks="all",
        enable_idempotence=True,
        linger_ms=_LINGER_MS,
        max_batch_size=_BATCH_BYTES,
        compression_type=_COMPRESSION,
        **client_options(settings, "kc-submit"),
    )
    bar = tqdm(
        total=len(tasks), unit="task", desc=f"submit {manifest.job_id}", disable=not progress
    )
    try:
        await producer.start()
        await write_manifest(producer, settings, manifest)
        for start in range(0, len(tasks), _CHUNK):
            chunk = tasks[start : start + _CHUNK]
            sent = [
                await producer.send(topics.bulk(t.model), encode(t), t.request_id.encode())
                for t in chunk
            ]
            await asyncio.gather(*sent)
            bar.update(len(chunk))
        await write_manifest(producer, settings, manifest.moved(state="submitted"))
    except KafkaError as exc:
        raise BrokerUnavailable(
            f"Kafka did not take the job {manifest.job_id}: {exc!r}; submitting it again resumes it"
        ) from exc
    finally:
        bar.close()
        await producer.stop()
