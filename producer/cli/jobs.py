"""The bulk-job subcommands: ``submit``, ``collect`` and ``jobs status|list``.

submit FILE.jsonl [--job ID] [--skip-invalid] [--retry-failed] [--deadline-s S]
collect --job ID -o OUT.jsonl [--timeout S]
jobs status ID | jobs list

A batch file (OpenAI's format) and a batch id (``batch_...``) go to ``producer/cli/batches.py``:
the CLI and the HTTP Batch API work on the same batches.

Exit codes: 0 done; 1 ``collect`` stopped at ``--timeout`` with tasks missing; 2 a refusal
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

import producer.cli.batches as batches_cli
from producer import jobs
from producer.jobs.batch.session import is_batch_file
from schemas.settings import Settings

SettingsOf = Callable[[argparse.Namespace], Settings]


def add_job_commands(sub: Any, settings_of: SettingsOf) -> None:
    """Register the bulk-job subcommands on the main parser's subparsers."""
    submit = sub.add_parser("submit", help="publish a JSONL job file to the bulk lanes")
    submit.add_argument("file", type=Path, help="one /v1/completion body plus custom_id a line")
    submit.add_argument("--job", help="the job id (default: derived from the file's bytes)")
    submit.add_argument("--skip-invalid", action="store_true", help="publish the valid lines")
    submit.add_argument("--retry-failed", action="store_true", help="resubmit failed lines only")
    submit.add_argument("--deadline-s", type=float, help="skip tasks not started within S s")
    submit.add_argument("--no-progress", action="store_true", help="no progress bar")
    submit.set_defaults(handler=lambda a: _submit(a, settings_of(a)), kafka=True)
    collect = sub.add_parser("collect", help="write a job's results to a JSONL file (resumes)")
    collect.add_argument("--job", required=True, help="the job id")
    collect.add_argument("-o", "--output", type=Path, required=True, help="OUT.jsonl")
    collect.add_argument("--timeout", type=float, help="give up after S seconds")
    collect.add_argument("--no-progress", action="store_true", help="no progress bar")
    collect.set_defaults(handler=lambda a: _collect(a, settings_of(a)), kafka=True)
    job = sub.add_parser("jobs", help="bulk jobs: counts of done, failed, pending, tokens")
    job.add_argument("action", choices=["status", "list"])
    job.add_argument("job_id", nargs="?", help="the job id (status)")
    job.set_defaults(handler=lambda a: _jobs(a, settings_of(a)), kafka=True)


def _submit(args: argparse.Namespace, settings: Settings) -> int:
    if args.file.is_file() and is_batch_file(args.file):
        return batches_cli.submit(args, settings)
    report = asyncio.run(
        jobs.submit(
            settings,
            args.file,
            job_id=args.job,
            skip_invalid=args.skip_invalid,
            retry_failed=args.retry_failed,
            deadline_s=args.deadline_s,
            progress=not args.no_progress,
        )
    )
    for problem in report.skipped:
        print(f"skipped {problem}", file=sys.stderr)
    print(f"job {report.job_id}: {report.note}; {report.published} of {report.tasks} tasks sent")
    return 0


def _collect(args: argparse.Namespace, settings: Settings) -> int:
    if batches_cli.is_batch_id(args.job):
        return batches_cli.collect(args, settings)
    report = asyncio.run(
        jobs.collect(
            settings,
            args.job,
            args.output,
            timeout_s=args.timeout,
            progress=not args.no_progress,
        )
    )
    print(
        f"job {report.job_id}: {report.done} done, {report.failed} failed of {report.tasks}; "
        f"{report.tokens} tokens; {report.written} lines written, {report.replaced} replaced "
        f"in {args.output}"
    )
    if report.complete:
        return 0
    missing = report.tasks - report.done - report.failed
    shown = ", ".join(f"{cid} ({model})" for cid, model in report.missing)
    print(f"timed out: {missing} task(s) have no result yet, e.g. {shown}", file=sys.stderr)
    return 1


def _jobs(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "status":
        if not args.job_id:
            print("jobs status: name the job id", file=sys.stderr)
            return 2
        if batches_cli.is_batch_id(args.job_id):
            return batches_cli.status(settings, args.job_id)
        print(asyncio.run(jobs.job_status(settings, args.job_id)))
        return 0
    listed = [
        (s.manifest.submitted_at, str(s)) for s in asyncio.run(jobs.list_jobs(settings))
    ] + batches_cli.listing(settings)
    for at, line in sorted(listed):
        # "seconds": "s" is no timespec of isoformat (it raised ValueError: Unknown timespec).
        print(f"{datetime.fromtimestamp(at, UTC).isoformat(timespec='seconds')}  {line}")
    return 0
