"""A job: a named chain of batches in the batch book, and where it stands.

``submit`` makes every bulk job a batch. A job's name (``--job``, or one derived from the
file's bytes) and a digest of its lines ride in the batch's metadata (``kc_job``,
``kc_digest``); ``--retry-failed`` adds a batch of the failed lines, linked to the one it
retries (``kc_retry_of``). A job is therefore the batches that carry its name, oldest first,
and each line's outcome is its newest: a retry's answer replaces the failure it retried.
A batch id names one batch alone, whoever created it (the HTTP Batch API included).

Everything here reads the book (a dictionary of the batches topic and the running batches'
results), so what a job costs to inspect follows the job, not what the topics retain.
"""

from __future__ import annotations

from dataclasses import dataclass

from producer.jobs.batch.book import BatchBook
from producer.jobs.jobfile import JobError
from schemas.batch import TERMINAL, BatchRecord

JOB = "kc_job"
DIGEST = "kc_digest"
RETRY_OF = "kc_retry_of"


def is_batch_id(name: str | None) -> bool:
    """Whether a job name is in fact a batch id."""
    return bool(name) and str(name).startswith("batch_")


@dataclass(frozen=True, slots=True)
class Job:
    """The batches of one job (oldest first) and the counts of its lines."""

    name: str
    batches: tuple[BatchRecord, ...]
    lines: int
    completed: int
    failed: int  # lines whose newest outcome is an error (expired and cancelled ones included)
    waiting: int  # lines of its newest batch not yet handed to the bulk lanes

    @property
    def latest(self) -> BatchRecord:
        """The newest batch: the one a retry runs in."""
        return self.batches[-1]

    @property
    def ended(self) -> bool:
        """Its newest batch ended: the job's output is whole."""
        return self.latest.status in TERMINAL

    @property
    def pending(self) -> int:
        """Lines with no outcome yet."""
        return max(0, self.lines - self.completed - self.failed)

    @property
    def in_flight(self) -> int:
        """Lines handed to the bulk lanes and not yet answered."""
        return max(0, self.pending - self.waiting)

    @property
    def digest(self) -> str | None:
        """The digest of the lines it was submitted with (None for a batch made over HTTP)."""
        return (self.batches[0].metadata or {}).get(DIGEST)

    def __str__(self) -> str:
        first = self.batches[0]
        ids = ", ".join(b.id for b in self.batches)
        return (
            f"{self.name}: {self.latest.status}, {self.lines} lines ({', '.join(first.models)}): "
            f"{self.completed} completed, {self.failed} failed, {self.pending} pending "
            f"({self.waiting} waiting, {self.in_flight} in flight); "
            f"key {first.key_id}; batch{'es' if len(self.batches) > 1 else ''} {ids}"
        )


def find_job(book: BatchBook, name: str) -> Job:
    """The job of that name, or the batch of that id alone."""
    if is_batch_id(name):
        batch = book.batches.get(name)
        chain = [batch] if batch is not None else []
    else:
        chain = [b for b in book.batches.values() if (b.metadata or {}).get(JOB) == name]
    if not chain:
        raise JobError(
            f"no job or batch {name!r} on the batches topic (kafka-completions jobs list)"
        )
    return job_of(book, name, chain)


def jobs(book: BatchBook) -> list[Job]:
    """Every job (and every batch made without a job name), oldest first."""
    named: dict[str, list[BatchRecord]] = {}
    for batch in book.batches.values():
        named.setdefault((batch.metadata or {}).get(JOB) or batch.id, []).append(batch)
    listed = [job_of(book, name, chain) for name, chain in named.items()]
    return sorted(listed, key=lambda j: (j.batches[0].created_at, j.name))


def job_of(book: BatchBook, name: str, chain: list[BatchRecord]) -> Job:
    """A job from its batches: completions add up, the newest batch's errors are its failures.

    A retry holds exactly the lines that had failed before it, so a line completed in any
    batch is completed, and a line failed is one the newest batch answered with an error.
    """
    # A stable sort: within a second (created_at is whole seconds) the book's order, which
    # is the order the batches were created in.
    ordered = tuple(sorted(chain, key=lambda b: b.created_at))
    completed = sum(book.counts(b).completed for b in ordered)
    latest = ordered[-1]
    errors = book.outcomes(latest) - book.counts(latest).completed
    return Job(name, ordered, ordered[0].total, completed, errors, book.waiting(latest))
