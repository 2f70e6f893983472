"""A key's quota at the front door: its limits checked before anything is published.

The gateway asks ``Quota.admit`` for every request that calls a model, and
``Quota.check_batch`` when a batch is created; the decisions are ``producer.tenants.limits``'s,
the counts the usage book's (tokens, spend) and the admissions log's (requests). Static keys
(``KC_API_KEYS``) have no limits.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Protocol

from producer.refusals import ApiError
from producer.tenants.admissions import Admissions
from producer.tenants.limits import (
    Overrun,
    check_budget,
    check_requests,
    check_tokens,
    most_cost,
)
from producer.tenants.usagebook import UsageBook
from schemas.api import ErrorDetail
from schemas.batch import BatchRecord
from schemas.keys import KeyRecord
from schemas.metrics import FrontendMetrics
from schemas.registry import Registry

_OPEN = ("validating", "in_progress", "cancelling", "finalizing")


class KeyRecords(Protocol):
    """Where a managed key's record is found (``producer.tenants.keybook.KeyBook``)."""

    def get(self, key_id: str) -> KeyRecord | None:
        """The key's record, or None for a key that is not managed."""


class Quota:
    """The limits of managed keys, over the usage book and the admissions log."""

    def __init__(
        self,
        keys: KeyRecords,
        usage: UsageBook,
        admissions: Admissions,
        registry: Registry,
        metrics: FrontendMetrics,
    ) -> None:
        self._keys = keys
        self._usage = usage
        self._admissions = admissions
        self._registry = registry
        self._metrics = metrics

    async def admit(self, key_id: str) -> None:
        """Refuse with 429 a request past its key's tpm limit, budget or rpm limit; an
        admitted request under an rpm limit holds its place in the admissions log."""
        record = self._keys.get(key_id)
        if record is None:
            return
        now = time.time()
        tokens = self._usage.tokens_last_minute(key_id, now)
        overrun = check_tokens(record, tokens, now) or self._budget(record, now)
        limit = record.rpm_limit
        if (
            overrun is None
            and limit is not None
            and not await self._admissions.admit(key_id, limit)
        ):
            later = time.time()
            recent = self._admissions.recent(key_id, later)
            overrun = check_requests(record, recent, later) or _full_minute(record)
        if overrun is not None:
            raise self._refusal(overrun)

    def check_batch(
        self, key_id: str, tokens: dict[str, tuple[int, int]], open_batches: Iterable[BatchRecord]
    ) -> float:
        """The most cost of a batch of these most ``tokens`` (per model: input, output);
        refused with 429 when it, with the most cost of the key's open batches, would pass
        the key's budget."""
        cost = most_cost(tokens, self._registry)
        record = self._keys.get(key_id)
        if record is None or record.max_budget is None:
            return cost
        held = sum(b.max_cost for b in open_batches if b.key_id == key_id and b.status in _OPEN)
        now = time.time()
        overrun = check_budget(record, self._spend(record, now), now, cost + held)
        if overrun is not None:
            raise self._refusal(overrun)
        return cost

    def _budget(self, record: KeyRecord, now: float) -> Overrun | None:
        return check_budget(record, self._spend(record, now), now)

    def _spend(self, record: KeyRecord, now: float) -> float:
        period = record.budget_window(now)
        if period is None:
            return 0.0
        return self._usage.spend(record.key_id, *period)

    def _refusal(self, overrun: Overrun) -> ApiError:
        self._metrics.rejected.labels(overrun.code).inc()
        kind = "insufficient_quota" if overrun.code == "insufficient_quota" else "requests"
        detail = ErrorDetail(type=kind, code=overrun.code, message=overrun.message)
        return ApiError(detail, {"Retry-After": str(overrun.retry_after_s)})


def _full_minute(record: KeyRecord) -> Overrun:
    """The log refused a place this front end had not yet seen taken (another front end's
    requests came first)."""
    return Overrun(
        "rate_limit_exceeded",
        f"rpm_limit: the key's {record.rpm_limit} requests of the last minute are taken; "
        "retry after 1 s",
        1,
    )
