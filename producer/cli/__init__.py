"""The ``kafka-completions`` console command: one entry point, a subcommand per role.

serve                 the HTTP front end
worker --model NAME   a worker serving one or more models
broker start|stop|status   the local single-node Kafka broker (development, tests)
dev                   everything at once on the embedded defaults (what `make run` runs)
models list|prepare   the registry with each model's state; convert local weights once
models add NAME --path P   write a local model's entry into the KC_REGISTRY_PATH file
submit FILE.jsonl     make a batch of a bulk job (see producer/cli/jobs.py for every option)
collect --job ID -o OUT.jsonl   write a job's lines (resumes; never duplicates a line)
jobs status ID|list   lines completed, failed and pending per job
keys create|list|info|update|revoke   managed API keys (see producer/cli/keys.py)
usage [--since 7d] [--by model,key,batch] [--costs] [--json]   requests, tokens, costs
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from schemas.errors import KCError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from devstack.cli import add_broker_commands

    from producer.cli.jobs import add_job_commands
    from producer.cli.keys import add_key_commands
    from producer.cli.models import add_model_commands
    from producer.cli.services import add_service_commands, settings_of
    from producer.cli.usage import add_usage_commands

    parser = argparse.ArgumentParser(
        prog="kafka-completions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_service_commands(sub)
    add_model_commands(sub)
    add_broker_commands(sub)
    add_job_commands(sub, settings_of)
    add_key_commands(sub, settings_of)
    add_usage_commands(sub, settings_of)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; a KCError ends it with its message and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except KCError as exc:
        print(f"kafka-completions: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
