"""The ``usage`` subcommand: the usage ledger as a table, or as OpenAI's page, read from Kafka.

usage [--since 7d | --start ISO] [--until ISO] [--by model,key,batch] [--bucket 1m|1h|1d]
      [--costs] [--json]

It reads the ledger itself, every key's usage (whoever reaches the brokers operates the
service), and answers through the report behind the Usage and Costs APIs
(``producer.tenants.report``): the same buckets, groups and sums, the whole period on one page.
Keys are shown by key id, never by key.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from producer.tenants.keybook import opened
from producer.tenants.report import (
    CostsPage,
    Period,
    UsagePage,
    UsageResult,
    costs_page,
    period,
    usage_page,
)
from producer.tenants.usagebook import UsageBook
from schemas.errors import BrokerUnavailable, ReportError
from schemas.kafka import ensure_topics
from schemas.settings import Settings
from schemas.usage import UsageBucket

SettingsOf = Callable[[argparse.Namespace], Settings]
_READ_S = 60.0
_SPAN = re.compile(r"([0-9]+)([mhd])")
_SPAN_S = {"m": 60, "h": 3600, "d": 86400}
# --by names -> the report's group_by, for usage and for costs (a model's cost is its line
# items: its input and its output tokens).
_USAGE_BY = {"model": "model", "key": "api_key_id", "batch": "batch"}
_COSTS_BY = {"model": "line_item", "key": "api_key_id"}


def add_usage_commands(sub: Any, settings_of: SettingsOf) -> None:
    """Register ``usage`` on the main parser's subparsers."""
    usage = sub.add_parser("usage", help="requests, tokens and costs per key, model and period")
    when = usage.add_mutually_exclusive_group()
    when.add_argument("--since", type=_duration, default=7 * 86400, help="30m, 12h, 7d (default)")
    when.add_argument("--start", type=_instant, help="from this time (ISO 8601; UTC if no zone)")
    usage.add_argument("--until", type=_instant, help="up to this time (default: now)")
    usage.add_argument("--by", type=_names, default=(), help="model,key,batch (comma-separated)")
    usage.add_argument("--bucket", choices=["1m", "1h", "1d"], default="1d", help="default 1d")
    usage.add_argument("--costs", action="store_true", help="costs in USD (by the day)")
    usage.add_argument("--json", action="store_true", help="OpenAI's page object, not a table")
    usage.set_defaults(handler=lambda a: report(a, settings_of), kafka=True)


def report(args: argparse.Namespace, settings_of: SettingsOf) -> int:
    """Print the period's usage (or costs), managed keys by their aliases."""
    now = int(time.time())
    end = now if args.until is None else args.until
    start = args.start if args.start is not None else now - args.since
    groups = _groups(args.by, args.costs)
    if args.costs and args.bucket != "1d":
        raise ReportError("--bucket", args.bucket, "costs come by the day: use 1d")
    span = period(start, end, args.bucket)
    settings = settings_of(args)
    buckets = asyncio.run(read_ledger(settings, span))
    page = costs_page(buckets, span, groups) if args.costs else usage_page(buckets, span, groups)
    if args.json:
        print(page.model_dump_json(indent=2))
    else:
        aliases = asyncio.run(read_aliases(settings))
        print(table(page, aliases) or f"no usage from {_when(start)} to {_when(end)}")
    return 0


async def read_ledger(settings: Settings, span: Period) -> list[UsageBucket]:
    """The ledger's buckets of ``span``, read from the usage topic as committed."""
    # A command against a running service: its topics are served; wait for none of them.
    await ensure_topics(settings, [], settle_all=False)
    book = UsageBook(settings)
    await book.start()
    try:
        await book.loaded(_READ_S)
    except TimeoutError as exc:
        raise BrokerUnavailable(f"the usage ledger was not read in {_READ_S:g} s") from exc
    finally:
        await book.stop()
    return book.select(span.start, span.end)


async def read_aliases(settings: Settings) -> dict[str, str]:
    """Each managed key's alias, by key id (the table names a key by it)."""
    async with opened(settings) as book:
        return {k: r.key_alias for k, r in book.records.items() if r.key_alias}


def table(page: UsagePage | CostsPage, aliases: Mapping[str, str]) -> str:
    """The page's results as an aligned table with a total line ("" when it has none)."""
    usage = isinstance(page, UsagePage)
    labels = ["key", "model", "batch"] if usage else ["key", "line item"]
    numbers = ["requests", "failed", "input", "output"] if usage else ["cost (USD)"]
    rows: list[tuple[str, list[str | bool | None], list[float]]] = []
    for bucket in page.data:
        for r in bucket.results:
            if isinstance(r, UsageResult):
                named: list[str | bool | None] = [r.api_key_id, r.model, r.batch]
                counts = [r.num_model_requests, r.num_failed_requests, r.input_tokens]
                rows.append((_when(bucket.start_time), named, [*counts, r.output_tokens]))
            else:
                named = [r.api_key_id, r.line_item]
                rows.append((_when(bucket.start_time), named, [r.amount.value]))
    if not rows:
        return ""
    # A column nobody grouped by is null on every row: left out.
    shown = [i for i in range(len(labels)) if any(row[1][i] is not None for row in rows)]
    lines = [["start (UTC)", *(labels[i] for i in shown), *numbers]]
    for when, named, values in rows:
        cells = [_label(named[i], labels[i], aliases) for i in shown]
        lines.append([when, *cells, *(_number(v) for v in values)])
    totals = [sum(row[2][i] for row in rows) for i in range(len(numbers))]
    lines.append(["total", *([""] * len(shown)), *(_number(v) for v in totals)])
    left = 1 + len(shown)
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    )


def _label(value: str | bool | None, column: str, aliases: Mapping[str, str]) -> str:
    if isinstance(value, bool):
        return "batch" if value else "interactive"
    if column == "key" and value is not None:
        return aliases.get(value, value or "(no key)")
    return value or ""


def _number(value: float) -> str:
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def _groups(by: Sequence[str], costs: bool) -> tuple[str, ...]:
    names = _COSTS_BY if costs else _USAGE_BY
    for name in by:
        if name not in names:
            raise ReportError("--by", name, "costs are grouped by model or key only")
    return tuple(names[name] for name in by)


def _when(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M")


def _duration(text: str) -> int:
    found = _SPAN.fullmatch(text.strip())
    if found is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a span such as 30m, 12h or 7d")
    return int(found.group(1)) * _SPAN_S[found.group(2)]


def _instant(text: str) -> int:
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from exc
    return int((at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp())


def _names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in _USAGE_BY]
    if unknown:
        raise argparse.ArgumentTypeError(f"{unknown[0]!r} is not one of model, key, batch")
    return names
