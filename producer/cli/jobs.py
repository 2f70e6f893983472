"""The bulk-job subcommands: ``submit``, ``collect`` and ``jobs status|list``.

submit FILE.jsonl [--job NAME] [--skip-invalid] [--retry-failed] [--deadline-s S]
collect --job NAME|BATCH_ID -o OUT.jsonl [--timeout S]
jobs status NAME|BATCH_ID | jobs list

Every job is a batch of the Batch API (``producer/jobs``): a job file of ``/v1/completion``
bodies becomes a batch of ``/v1/completion`` lines, a batch file is taken as it is, and a
batch made over HTTP is collected, followed and listed here by its id.

Exit codes: 0 done; 1 ``collect`` stopped at ``--timeout`` with lines missing; 2 a refusal
(an invalid file, an unknown job, Kafka unreachable), with the reason on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from producer import jobs
from schemas.settings import Settings

SettingsOf = Callable[[argparse.Namespace], Settings]


def add_job_commands(sub: Any, settings_of: SettingsOf) -> None:
    """Register the bulk-job subcommands on the main parser's subparsers."""
    submit = sub.add_parser("submit", help="make a batch of a JSONL job or batch file")
    submit.add_argument("file", type=Path, help="a /v1/completion body plus custom_id a line")
    submit.add_argument("--job", help="the job's name (default: derived from the file's bytes)")
    submit.add_argument("--skip-invalid", action="store_true", help="submit the valid lines")
    submit.add_argument("--retry-failed", action="store_true", help="a batch of failed lines")
    submit.add_argument("--deadline-s", type=float, help="the completion window, in seconds")
    # Scripts written when submit drew a bar keep working: creating a batch is one step now.
    submit.add_argument("--no-progress", action="store_true", help=argparse.SUPPRESS)
    submit.set_defaults(handler=lambda a: _submit(a, settings_of(a)), kafka=True)
    collect = sub.add_parser("collect", help="write a job's lines to a JSONL file (resumes)")
    collect.add_argument("--job", required=True, help="the job's name or a batch id")
    collect.add_argument("-o", "--output", type=Path, required=True, help="OUT.jsonl")
    collect.add_argument("--timeout", type=float, help="give up after S seconds")
    collect.add_argument("--no-progress", action="store_true", help="no progress bar")
    collect.set_defaults(handler=lambda a: _collect(a, settings_of(a)), kafka=True)
    job = sub.add_parser("jobs", help="bulk jobs: lines completed, failed, pending")
    job.add_argument("action", choices=["status", "list"])
    job.add_argument("job_id", nargs="?", help="the job's name or a batch id (status)")
    job.set_defaults(handler=lambda a: _jobs(a, settings_of(a)), kafka=True)


def _submit(args: argparse.Namespace, settings: Settings) -> int:
    report = asyncio.run(
        jobs.submit(
            settings,
            args.file,
            job_id=args.job,
            skip_invalid=args.skip_invalid,
            retry_failed=args.retry_failed,
            deadline_s=args.deadline_s,
        )
    )
    for problem in report.skipped:
        print(f"skipped {problem}", file=sys.stderr)
    made = f"batch {report.batch.id}, {report.published} lines" if report.batch else "no batch"
    print(f"job {report.job_id}: {report.note}; {made}")
    return 0


def _collect(args: argparse.Namespace, settings: Settings) -> int:
    report = asyncio.run(
        jobs.collect(
            settings, args.job, args.output, timeout_s=args.timeout, progress=not args.no_progress
        )
    )
    job = report.job
    print(
        f"job {job.name}: {job.completed} completed, {job.failed} failed of {job.lines} lines; "
        f"{report.written} lines written, {report.replaced} replaced in {args.output}"
    )
    if report.complete:
        return 0
    shown = ", ".join(report.missing)
    print(f"timed out: {job.pending} line(s) have no outcome yet, e.g. {shown}", file=sys.stderr)
    return 1


def _jobs(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "status":
        if not args.job_id:
            print("jobs status: name the job or batch", file=sys.stderr)
            return 2
        print(asyncio.run(jobs.job_status(settings, args.job_id)))
        return 0
    for job in asyncio.run(jobs.list_jobs(settings)):
        at = datetime.fromtimestamp(job.batches[0].created_at, UTC)
        # "seconds": "s" is no timespec of isoformat (it raised ValueError: Unknown timespec).
        print(f"{at.isoformat(timespec='seconds')}  {job}")
    return 0
