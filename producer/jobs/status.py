"""A bulk job's progress: its results so far, tallied against its manifest."""

from __future__ import annotations

from contextlib import aclosing
from dataclasses import dataclass

from producer.jobs.collect import manifest_of
from producer.jobs.manifest import JobManifest, read_manifests
from producer.jobs.scan import job_needle, scan
from producer.jobs.tally import JobTally
from schemas.settings import Settings
from schemas.topics import Topics
from schemas.wire import decode_result


@dataclass(frozen=True, slots=True)
class JobStatus:
    """Counts of a job's tasks."""

    manifest: JobManifest
    done: int
    failed: int
    pending: int
    tokens: int

    def __str__(self) -> str:
        m = self.manifest
        return (
            f"{m.job_id}: {m.state}, {m.tasks} tasks ({', '.join(sorted(m.models))}): "
            f"{self.done} done, {self.failed} failed, {self.pending} pending, "
            f"{self.tokens} tokens"
        )


async def tally_of(settings: Settings, manifest: JobManifest) -> JobTally:
    """The job's results so far (read up to the end of the results topic)."""
    tallies = await _tallies(settings, {manifest.job_id: manifest})
    return tallies[manifest.job_id]


async def _tallies(settings: Settings, manifests: dict[str, JobManifest]) -> dict[str, JobTally]:
    tallies = {j: JobTally(m.tasks, m.retry_cutoff_ms) for j, m in manifests.items()}
    needle = job_needle(next(iter(manifests))) if len(manifests) == 1 else None
    topic = Topics(settings.topic_prefix).results
    async with aclosing(scan(settings, [topic], needle=needle)) as batches:
        async for batch in batches:
            for record in batch:
                result = decode_result(record.value)
                tally = tallies.get(result.job_id or "")
                if tally is not None:
                    tally.add(result, record.timestamp)
    return tallies


def _status(manifest: JobManifest, tally: JobTally) -> JobStatus:
    return JobStatus(manifest, tally.done, tally.failed, tally.pending, tally.tokens)


async def job_status(settings: Settings, job_id: str) -> JobStatus:
    """Counts of done, failed and pending tasks of one job, and the tokens used."""
    manifest = await manifest_of(settings, job_id)
    return _status(manifest, await tally_of(settings, manifest))


async def list_jobs(settings: Settings) -> list[JobStatus]:
    """The status of every job, oldest first."""
    manifests = await read_manifests(settings)
    if not manifests:
        return []
    tallies = await _tallies(settings, manifests)
    ordered = sorted(manifests.values(), key=lambda m: m.submitted_at)
    return [_status(m, tallies[m.job_id]) for m in ordered]
