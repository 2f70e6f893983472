"""The quota of a managed key over the usage book: spend, and the most cost of open batches."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from producer.refusals import ApiError
from producer.tenants.admissions import Admissions
from producer.tenants.quota import Quota
from producer.tenants.usagebook import UsageBook
from schemas.batch import BatchRecord, BatchStatus
from schemas.keys import KeyRecord
from schemas.metrics import FrontendMetrics
from schemas.registry import ModelSpec, Registry
from schemas.settings import Settings
from schemas.usage import UsageBucket, minute_of

PRICE = 1e-3
REGISTRY = Registry(
    [ModelSpec(name="m", backend="echo", input_cost_per_token=PRICE, output_cost_per_token=PRICE)]
)


class Keys:
    def __init__(self, *records: KeyRecord) -> None:
        self._records = {r.key_id: r for r in records}

    def get(self, key_id: str) -> KeyRecord | None:
        return self._records.get(key_id)


def key(created_at: float, **limits: Any) -> KeyRecord:
    fields: dict[str, Any] = {"key_id": "k1", "hash": "h", "key_name": "sk-kc-...abcd"}
    return KeyRecord(created_at=created_at, updated_at=created_at, **(fields | limits))


def batch(batch_id: str, status: BatchStatus, max_cost: float, key_id: str = "k1") -> BatchRecord:
    return BatchRecord(
        id=batch_id,
        key_id=key_id,
        input_file_id="f",
        endpoint="/v1/completions",
        completion_window="24h",
        status=status,
        created_at=0,
        expires_at=86400,
        output_expires_after_s=86400,
        max_cost=max_cost,
    )


def quota(record: KeyRecord, book: UsageBook) -> Quota:
    metrics = FrontendMetrics.create(CollectorRegistry())
    return Quota(Keys(record), book, Admissions(Settings()), REGISTRY, metrics)


def spent(book: UsageBook, at: float, tokens: int) -> None:
    book.apply(
        UsageBucket(
            key_id="k1",
            model="m",
            batch=False,
            start=minute_of(at),
            requests=1,
            input_tokens=tokens,
            input_cost=tokens * PRICE,
        )
    )


def test_open_batches_hold_their_most_cost_until_they_end(time_now: float) -> None:
    book = UsageBook(Settings())
    record = key(time_now - 3600, max_budget=1.0)
    spent(book, time_now, 200)  # $0.20
    open_ones = [batch("b1", "in_progress", 0.3), batch("b2", "completed", 0.9)]
    limits = quota(record, book)
    assert limits.check_batch("k1", {"m": (200, 200)}, open_ones) == pytest.approx(0.4)
    with pytest.raises(ApiError) as refused:
        limits.check_batch("k1", {"m": (300, 201)}, open_ones)  # 0.2 + 0.3 + 0.501 > 1
    assert refused.value.status == 429 and refused.value.detail.code == "insufficient_quota"
    others = [batch("b3", "in_progress", 0.9, key_id="someone-else")]
    assert limits.check_batch("k1", {"m": (300, 300)}, others) == pytest.approx(0.6)


def test_spend_of_an_earlier_budget_period_does_not_count(time_now: float) -> None:
    book = UsageBook(Settings())
    record = key(time_now - 7200 - 30, max_budget=0.1, budget_duration="1h")
    spent(book, time_now - 3700, 1000)  # $1 in the period before
    limits = quota(record, book)
    assert limits.check_batch("k1", {"m": (50, 49)}, []) == pytest.approx(0.099)
    spent(book, time_now, 2)  # this period's spend, counted as it comes
    with pytest.raises(ApiError):
        limits.check_batch("k1", {"m": (50, 49)}, [])


@pytest.fixture
def time_now() -> float:
    import time

    return time.time()
