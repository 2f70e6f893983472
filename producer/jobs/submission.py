"""Submitting a bulk job: every job is a batch of the Batch API.

A job file (a ``/v1/completion`` body plus ``custom_id`` a line) becomes a batch of
``/v1/completion`` lines; a file in OpenAI's batch format is taken as it is. Every line is
checked first, with its number in each problem, and nothing is published while one is bad
(``--skip-invalid`` leaves the bad lines out and lists them). The batch is then uploaded and
created like one made over HTTP, owned by the first key of ``KC_API_KEYS`` (so that key sees
it there) or, with no key configured, by ``operator``, which no HTTP key can be.

Idempotence by job name: the batch carries the job's name and a digest of its lines, so the
same file submitted again publishes nothing, and the same name with other lines is refused.
``--retry-failed`` creates a batch of the lines whose outcome is an error, linked to the batch
it retries; ``--deadline-s`` is the completion window.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from producer.jobs.batch.lines import parse_batch_file
from producer.jobs.batch.output import answered_lines
from producer.jobs.batch.service import BatchService
from producer.jobs.batch.session import opened
from producer.jobs.job import DIGEST, JOB, RETRY_OF, Job, find_job
from producer.jobs.jobfile import (
    JobError,
    JobFileInvalid,
    LineProblem,
    decoded,
    default_job_id,
    parse_job_file,
)
from schemas.batch import BatchCreate, BatchRecord
from schemas.errors import Refused
from schemas.keys import key_id
from schemas.registry import Registry
from schemas.settings import Settings

__all__ = ["OPERATOR", "SubmitReport", "owner_of", "submit"]

OPERATOR = "operator"  # the owner of batches submitted with no KC_API_KEYS: not a key id

Source = Path | str | Sequence[Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class SubmitReport:
    """What a submission did: the batch it created (None when it created none)."""

    job_id: str
    batch: BatchRecord | None
    published: int  # lines
    skipped: list[LineProblem]
    note: str


@dataclass(frozen=True, slots=True)
class _Lines:
    """A file's valid lines as batch-file lines by custom_id, its endpoint, and its problems."""

    lines: dict[str, bytes]
    endpoint: str
    problems: list[LineProblem]

    def content(self, ids: set[str] | None = None) -> bytes:
        """The batch file of these lines (of ``ids`` only, when given)."""
        return b"".join(t for cid, t in self.lines.items() if ids is None or cid in ids)

    @property
    def digest(self) -> str:
        """What makes two submissions of one job the same."""
        return hashlib.sha256(self.content()).hexdigest()[:32]


def owner_of(settings: Settings) -> str:
    """The key id that owns batches submitted here: the first configured key's."""
    if not settings.api_keys:
        return OPERATOR
    return key_id(settings.api_keys[0].get_secret_value())


async def submit(
    settings: Settings,
    source: Source,
    *,
    job_id: str | None = None,
    skip_invalid: bool = False,
    retry_failed: bool = False,
    deadline_s: float | None = None,
    registry: Registry | None = None,
) -> SubmitReport:
    """Check every line, then create the job's batch (or its retry), idempotently by name."""
    data = _read_source(source)
    name = job_id or default_job_id(data)
    async with opened(settings, registry) as service:
        lines = _checked(data, service)
        if lines.problems and not skip_invalid:
            raise JobFileInvalid(lines.problems)
        if not lines.lines:
            raise JobError("the job file has no valid line; nothing was published")
        try:
            job: Job | None = find_job(service.book, name)
        except JobError:
            job = None
        if job is not None and job.digest != lines.digest:
            raise JobError(
                f"job {name} was submitted with other content ({job.batches[0].id}); "
                "use another --job id, or submit the original file"
            )
        if retry_failed:
            return await _retry(service, job, name, lines, deadline_s)
        if job is not None:
            note = "already submitted: nothing published (--retry-failed resubmits failed lines)"
            return SubmitReport(name, None, 0, lines.problems, note)
        meta = {JOB: name, DIGEST: lines.digest}
        batch = await _create(service, name, lines, None, meta, deadline_s)
        return SubmitReport(name, batch, len(lines.lines), lines.problems, "submitted")


async def _retry(
    service: BatchService, job: Job | None, name: str, lines: _Lines, deadline_s: float | None
) -> SubmitReport:
    if job is None:
        raise JobError(f"no job {name!r} to retry; submit it first")
    if not job.ended:
        raise JobError(
            f"job {name}'s batch {job.latest.id} is {job.latest.status}: retry once it has ended"
        )
    failed = {
        json.loads(text)["custom_id"]
        async for kind, text in answered_lines(service.settings, job.latest)
        if kind == "errors"
    }
    if not failed:
        return SubmitReport(name, None, 0, lines.problems, "no failed line: nothing published")
    meta = {JOB: name, DIGEST: lines.digest, RETRY_OF: job.latest.id}
    batch = await _create(service, name, lines, failed, meta, deadline_s)
    return SubmitReport(
        name, batch, len(failed), lines.problems, f"retried {len(failed)} failed line(s)"
    )


async def _create(
    service: BatchService,
    name: str,
    lines: _Lines,
    ids: set[str] | None,
    metadata: dict[str, str],
    window_s: float | None,
) -> BatchRecord:
    owner = owner_of(service.settings)
    upload = await service.upload(owner, f"{name}.jsonl", "batch", lines.content(ids))
    body = BatchCreate(
        input_file_id=upload.id,
        endpoint=lines.endpoint,
        completion_window="24h",
        metadata=metadata,
    )
    batch = await service.create(owner, body, window_s)
    if batch.status == "failed" and batch.errors is not None:
        raise Refused("; ".join(f"line {e.line}: {e.message}" for e in batch.errors.data))
    return batch


def _checked(data: bytes, service: BatchService) -> _Lines:
    """The file's lines checked by its format: a batch file's as they are, a job file's as
    ``/v1/completion`` lines."""
    raw = data.split(b"\n")
    if is_batch_content(data):
        batch = parse_batch_file(data, service.registry, service.settings)
        kept = {line.custom_id: raw[line.number - 1].strip() + b"\n" for line in batch.lines}
        endpoints = {line.url for line in batch.lines}
        if len(endpoints) > 1:
            raise JobError(f"the file mixes endpoints {sorted(endpoints)}; a batch has one")
        endpoint = endpoints.pop() if endpoints else "/v1/completion"
        return _Lines(kept, endpoint, batch.problems)
    # split("\n"), not splitlines(): a JSON string may hold U+2028, and numbers must match.
    texts, undecoded = _decoded(raw)
    job = parse_job_file(texts, service.registry)
    converted = {}
    for line in job.lines:
        body = json.loads(texts[line.number - 1])
        del body["custom_id"]
        item = {"custom_id": line.custom_id, "method": "POST", "url": "/v1/completion"}
        converted[line.custom_id] = (json.dumps(item | {"body": body}) + "\n").encode()
    problems = sorted(undecoded + job.problems, key=lambda p: p.number)
    return _Lines(converted, "/v1/completion", problems)


def _decoded(raw: list[bytes]) -> tuple[list[str], list[LineProblem]]:
    """Each line as text; a line that is not UTF-8 becomes blank (skipped) and a problem."""
    problems: list[LineProblem] = []
    texts = [decoded(n, line, problems) or "" for n, line in enumerate(raw, start=1)]
    return texts, problems


def is_batch_content(data: bytes) -> bool:
    """Whether JSONL content is in OpenAI's batch format (its first line has ``url``)."""
    for raw in data.split(b"\n"):
        if raw.strip():
            return b'"url"' in raw and b'"body"' in raw
    return False


def _read_source(source: Source) -> bytes:
    if isinstance(source, Path | str):
        try:
            return Path(source).read_bytes()
        except OSError as exc:
            raise JobError(f"cannot read the job file {source}: {exc}") from exc
    return "".join(json.dumps(dict(line)) + "\n" for line in source).encode()
