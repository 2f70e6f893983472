"""The bulk-job subcommands on OpenAI batches: ``submit`` of a batch file, ``collect``,
``jobs status`` and ``jobs list`` of batches (``producer/jobs_cli.py`` routes here).

A batch file (lines with ``url`` and ``body``) is submitted as a batch owned by the first key
of ``KC_API_KEYS``, so that key sees it over HTTP; a batch id (``batch_...``) is collected,
followed and listed whichever key created it. Exit codes as for jobs: 0 done, 1 ``collect``
stopped at ``--timeout`` with lines missing, 2 a refusal (with the reason on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
from datetime import UTC, datetime

from tqdm import tqdm  # type: ignore[import-untyped]

from producer.jobs.batch.service import BatchService
from producer.jobs.batch.session import collect_batch, find, opened, submit_batch
from schemas.batch import BatchRecord, RequestCounts
from schemas.errors import ConfigError
from schemas.settings import Settings


def is_batch_id(job_id: str | None) -> bool:
    """Whether a job id names a batch."""
    return bool(job_id) and str(job_id).startswith("batch_")


def submit(args: argparse.Namespace, settings: Settings) -> int:
    """``submit FILE.jsonl`` of a batch file."""
    if not settings.api_keys:
        raise ConfigError("KC_API_KEYS is empty: the first key owns the batches submitted here")
    # producer.frontend.auth.key_id, computed here: the job client loads no front-end module
    # (a test serves a batch submitted here to that key over HTTP).
    owner = hashlib.sha256(settings.api_keys[0].get_secret_value().encode()).hexdigest()[:16]
    content = args.file.read_bytes()

    async def run() -> BatchRecord:
        async with opened(settings) as service:
            return await submit_batch(service, args.file.name, content, owner)

    batch = asyncio.run(run())
    print(f"batch {batch.id}: {batch.status}, {batch.total} lines ({', '.join(batch.models)})")
    return 0


def collect(args: argparse.Namespace, settings: Settings) -> int:
    """``collect --job BATCH_ID -o OUT.jsonl``: its output lines, then its error lines."""
    bar = tqdm(unit="line", desc=args.job, disable=args.no_progress)

    def progress(counts: RequestCounts) -> None:
        bar.total = counts.total
        bar.n = counts.completed + counts.failed
        bar.set_postfix(completed=counts.completed, failed=counts.failed)

    async def run() -> tuple[int, str]:
        async with opened(settings) as service:
            report = await collect_batch(
                service, args.job, args.output, timeout_s=args.timeout, progress=progress
            )
            return (0 if report.complete else 1), _missing_text(report.counts, report.missing)

    try:
        code, missing = asyncio.run(run())
    finally:
        bar.close()
    if code:
        print(f"timed out: {missing}", file=sys.stderr)
    else:
        print(f"batch {args.job}: written to {args.output}")
    return code


def _missing_text(counts: RequestCounts, missing: list[str]) -> str:
    left = counts.total - counts.completed - counts.failed
    return f"{left} line(s) have no outcome yet, e.g. {', '.join(missing)}"


def status(settings: Settings, batch_id: str) -> int:
    """``jobs status BATCH_ID``."""

    async def run() -> str:
        async with opened(settings) as service:
            return describe(service, find(service, batch_id))

    print(asyncio.run(run()))
    return 0


def listing(settings: Settings) -> list[tuple[float, str]]:
    """Every batch as (created at, its line) for ``jobs list``."""

    async def run() -> list[tuple[float, str]]:
        async with opened(settings) as service:
            return [(b.created_at, describe(service, b)) for b in service.book.batches.values()]

    return asyncio.run(run())


def describe(service: BatchService, batch: BatchRecord) -> str:
    """One line: id, status, counts, models, owner."""
    c = service.counts(batch)
    pending = c.total - c.completed - c.failed
    when = datetime.fromtimestamp(batch.created_at, UTC).isoformat(timespec="seconds")
    return (
        f"{batch.id}: {batch.status}, {c.total} lines ({', '.join(batch.models)}): "
        f"{c.completed} completed, {c.failed} failed, {pending} pending; "
        f"created {when} by key {batch.key_id}"
    )
