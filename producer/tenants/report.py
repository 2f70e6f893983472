"""Usage and cost reports: the usage ledger's buckets as OpenAI's Usage and Costs API pages.

Pure functions over what ``UsageBook.select`` returned for a page's ``Period``: they bucket,
group and sum it into the pages of ``GET /v1/organization/usage/completions`` and
``GET /v1/organization/costs``; the routes and ``kafka-completions usage`` both answer through
them. Buckets are aligned to UTC (a day starts at 00:00 UTC): a report runs from ``start_time``
snapped down to its bucket to ``end_time`` snapped up, ``limit`` buckets a page, every bucket
present (an empty one with no results). What differs from OpenAI is listed in docs/tenants.md.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from schemas.errors import ReportError
from schemas.usage import UsageBucket

Width = Literal["1m", "1h", "1d"]
WIDTH_S: dict[str, int] = {"1m": 60, "1h": 3600, "1d": 86400}
# OpenAI's default and largest page, in buckets, per width (Usage API) and for costs (days).
USAGE_LIMITS: dict[str, tuple[int, int]] = {"1m": (60, 1440), "1h": (24, 168), "1d": (7, 31)}
COSTS_LIMITS = (7, 180)
UsageGroup = Literal["model", "api_key_id", "batch", "project_id", "user_id"]
CostsGroup = Literal["line_item", "api_key_id", "project_id"]
USAGE_GROUPS: tuple[str, ...] = ("model", "api_key_id", "batch", "project_id", "user_id")
COSTS_GROUPS: tuple[str, ...] = ("line_item", "api_key_id", "project_id")
# 9999-12-31T23:59:59Z: the last second a report may name (every tool can print it as a date).
LAST_TIME = 253_402_300_799
_CURSOR = re.compile(r"page_([0-9]{1,12})")


class UsageResult(BaseModel):
    """One group's usage in one bucket; a field not grouped by is null."""

    object: Literal["organization.usage.completions.result"] = (
        "organization.usage.completions.result"
    )
    input_tokens: int
    output_tokens: int
    input_cached_tokens: int = 0
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0
    num_model_requests: int
    # Ours, not OpenAI's: the requests among num_model_requests whose result was a failure.
    num_failed_requests: int
    project_id: None = None
    user_id: None = None
    api_key_id: str | None = None
    model: str | None = None
    batch: bool | None = None


class UsageTimeBucket(BaseModel):
    """One bucket of a usage page: its span and a result per group."""

    object: Literal["bucket"] = "bucket"
    start_time: int
    end_time: int
    results: list[UsageResult]


class UsagePage(BaseModel):
    """A page of the Usage API (completions)."""

    object: Literal["page"] = "page"
    data: list[UsageTimeBucket]
    has_more: bool
    next_page: str | None


class Amount(BaseModel):
    """A sum of money."""

    value: float
    currency: Literal["usd"] = "usd"


class CostsResult(BaseModel):
    """One group's cost in one bucket; a field not grouped by is null."""

    object: Literal["organization.costs.result"] = "organization.costs.result"
    amount: Amount
    line_item: str | None = None
    project_id: None = None
    api_key_id: str | None = None
    quantity: float | None = None  # with group_by line_item: its tokens
    quantity_unit: Literal["tokens"] | None = None


class CostsTimeBucket(BaseModel):
    """One bucket (a UTC day) of a costs page."""

    object: Literal["bucket"] = "bucket"
    start_time: int
    end_time: int
    results: list[CostsResult]


class CostsPage(BaseModel):
    """A page of the Costs API."""

    object: Literal["page"] = "page"
    data: list[CostsTimeBucket]
    has_more: bool
    next_page: str | None


@dataclass(frozen=True, slots=True)
class Period:
    """The buckets one page holds: their width, their starts, and the next page's cursor."""

    width_s: int
    starts: tuple[int, ...]
    next_page: str | None

    @property
    def start(self) -> int:
        """Where the page's first bucket starts (epoch seconds)."""
        return self.starts[0] if self.starts else 0

    @property
    def end(self) -> int:
        """Where the page's last bucket ends (0 for a page without buckets)."""
        return self.starts[-1] + self.width_s if self.starts else 0

    def slot(self, epoch_s: int) -> int | None:
        """The start of the page's bucket holding ``epoch_s``, or None."""
        if not self.start <= epoch_s < self.end:
            return None
        return epoch_s - (epoch_s - self.start) % self.width_s


def period(
    start_time: int,
    end_time: int,
    width: str = "1d",
    limit: int | None = None,
    page: str | None = None,
) -> Period:
    """The page of ``[start_time, end_time)``'s buckets from ``page`` on (``limit``: all)."""
    if width not in WIDTH_S:
        raise ReportError("bucket_width", width, f"must be one of {', '.join(WIDTH_S)}")
    if not 0 <= start_time <= LAST_TIME:
        raise ReportError("start_time", start_time, "must be Unix seconds from 0 to 9999")
    if limit is not None and limit < 1:
        raise ReportError("limit", limit, "must be 1 or more")
    width_s = WIDTH_S[width]
    first = start_time // width_s * width_s
    stop = -(-min(end_time, LAST_TIME + 1) // width_s) * width_s
    if page is not None:
        first = max(first, cursor_start(page) // width_s * width_s)
    count = max(0, (stop - first) // width_s) if end_time > start_time else 0
    shown = count if limit is None else min(count, limit)
    starts = tuple(first + i * width_s for i in range(shown))
    return Period(width_s, starts, f"page_{first + shown * width_s}" if shown < count else None)


def cursor_start(page: str) -> int:
    """Where the page a ``next_page`` cursor names starts."""
    found = _CURSOR.fullmatch(page)
    if found is None:
        raise ReportError("page", page, "is not a next_page this service gave")
    return int(found.group(1))


def usage_limit(width: str, limit: int | None) -> int:
    """OpenAI's page size for ``width``: its default, and at most its maximum."""
    default, most = USAGE_LIMITS.get(width, USAGE_LIMITS["1d"])
    return default if limit is None else min(limit, most)


def costs_limit(limit: int | None) -> int:
    """OpenAI's page size of the Costs API: 7 days by default, at most 180."""
    default, most = COSTS_LIMITS
    return default if limit is None else min(limit, most)


def visible_keys(own: str, admin: bool, asked: Sequence[str] | None) -> tuple[str, ...] | None:
    """The key ids a caller's report covers (None: all): an admin key's, those it asked for
    (all by default); an API key's, its own only, and nothing when it asked for others."""
    if admin:
        return tuple(asked) if asked is not None else None
    return (own,) if asked is None or own in asked else ()


def usage_page(
    buckets: Iterable[UsageBucket], span: Period, group_by: Iterable[str] = ()
) -> UsagePage:
    """The Usage API page of ``span`` from the ledger's buckets, grouped by ``group_by``."""
    groups = _groups(group_by, USAGE_GROUPS)
    tallies: dict[int, dict[tuple[str | None, str | None, bool | None], Counter[str]]]
    tallies = defaultdict(lambda: defaultdict(Counter))
    for bucket in buckets:
        slot = span.slot(bucket.start)
        if slot is None:
            continue
        group = (
            bucket.key_id if "api_key_id" in groups else None,
            bucket.model if "model" in groups else None,
            bucket.batch if "batch" in groups else None,
        )
        tallies[slot][group].update(
            requests=bucket.requests,
            failed=bucket.failed,
            input_tokens=bucket.input_tokens,
            output_tokens=bucket.output_tokens,
        )
    data = []
    for start in span.starts:
        found = tallies.get(start, {})
        results = [
            UsageResult(
                api_key_id=key_id,
                model=model,
                batch=batch,
                num_model_requests=tally["requests"],
                num_failed_requests=tally["failed"],
                input_tokens=tally["input_tokens"],
                output_tokens=tally["output_tokens"],
            )
            for (key_id, model, batch), tally in sorted(found.items(), key=_order)
        ]
        data.append(
            UsageTimeBucket(start_time=start, end_time=start + span.width_s, results=results)
        )
    return UsagePage(data=data, has_more=span.next_page is not None, next_page=span.next_page)


def costs_page(
    buckets: Iterable[UsageBucket],
    span: Period,
    group_by: Iterable[str] = (),
    line_items: Iterable[str] | None = None,
) -> CostsPage:
    """The Costs API page of ``span``: each bucket's cost, grouped by ``group_by``; a line
    item is one model's input or output tokens (``"gpt-4, input"``)."""
    groups = _groups(group_by, COSTS_GROUPS)
    wanted = set(line_items) if line_items is not None else None
    by_item = "line_item" in groups
    lines: dict[int, dict[tuple[str | None, str | None], list[tuple[float, int]]]]
    lines = defaultdict(lambda: defaultdict(list))
    for bucket in buckets:
        slot = span.slot(bucket.start)
        for item, cost, count in _line_items(bucket):
            if slot is not None and (wanted is None or item in wanted):
                key_id = bucket.key_id if "api_key_id" in groups else None
                lines[slot][(key_id, item if by_item else None)].append((cost, count))
    data = []
    for start in span.starts:
        results = [
            CostsResult(
                amount=Amount(value=math.fsum(cost for cost, _ in found)),
                api_key_id=key_id,
                line_item=item,
                quantity=sum(count for _, count in found) if by_item else None,
                quantity_unit="tokens" if by_item else None,
            )
            for (key_id, item), found in sorted(lines.get(start, {}).items(), key=_order)
        ]
        data.append(
            CostsTimeBucket(start_time=start, end_time=start + span.width_s, results=results)
        )
    return CostsPage(data=data, has_more=span.next_page is not None, next_page=span.next_page)


def _line_items(bucket: UsageBucket) -> tuple[tuple[str, float, int], ...]:
    # A model's two lines, as OpenAI names them: its input tokens and its output tokens.
    return (
        (f"{bucket.model}, input", bucket.input_cost, bucket.input_tokens),
        (f"{bucket.model}, output", bucket.output_cost, bucket.output_tokens),
    )


def _groups(given: Iterable[str], allowed: tuple[str, ...]) -> frozenset[str]:
    groups = frozenset(given)
    unknown = sorted(groups - set(allowed))
    if unknown:
        raise ReportError("group_by", unknown[0], f"must be among {', '.join(allowed)}")
    return groups


def _order(item: tuple[tuple[str | bool | None, ...], Any]) -> tuple[str, ...]:
    # Results in a stable order: by key id, then model or line item, interactive before batch.
    return tuple("" if part is None else str(part) for part in item[0])
