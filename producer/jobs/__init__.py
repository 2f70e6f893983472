"""Bulk jobs from the command line and from Python: every job is a batch of the Batch API.

The Python API (``await`` it in a notebook, ``asyncio.run`` it in a script)::

    from producer.jobs import collect, job_status, submit

    report = await submit(settings, "prompts.jsonl", job_id="nightly-1")
    print(await job_status(settings, "nightly-1"))
    await collect(settings, "nightly-1", Path("out.jsonl"), timeout_s=3600)

One module per step: ``jobfile`` (check a file's lines), ``submission`` (make the job's
batch), ``job`` (a job's batches and counts, from the batch book), ``collect`` (write its
lines out); ``batch`` is the Batch API's job model that all of them drive. This package
imports neither FastAPI nor ``producer.frontend``.
"""

from __future__ import annotations

from producer.jobs.batch.session import opened
from producer.jobs.collect import CollectReport, collect
from producer.jobs.job import Job, find_job, jobs
from producer.jobs.jobfile import JobError, JobFileInvalid
from producer.jobs.submission import SubmitReport, submit
from schemas.settings import Settings


async def job_status(settings: Settings, job_id: str) -> Job:
    """A job (or batch) and the counts of its lines."""
    async with opened(settings) as service:
        return find_job(service.book, job_id)


async def list_jobs(settings: Settings) -> list[Job]:
    """Every job and every batch made without a job name, oldest first."""
    async with opened(settings) as service:
        return jobs(service.book)


__all__ = [
    "CollectReport",
    "Job",
    "JobError",
    "JobFileInvalid",
    "SubmitReport",
    "collect",
    "job_status",
    "list_jobs",
    "submit",
]
