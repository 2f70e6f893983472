"""The Usage and Costs API pages over a usage book filled by hand (no Kafka): buckets aligned to
UTC, grouping, filters, empty buckets, paging through a whole range, limits, refusals, costs."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pytest

from producer.tenants.report import (
    LAST_TIME,
    CostsPage,
    Period,
    UsagePage,
    costs_limit,
    costs_page,
    cursor_start,
    period,
    usage_limit,
    usage_page,
    visible_keys,
)
from producer.tenants.usagebook import UsageBook
from schemas.errors import ReportError
from schemas.settings import Settings
from schemas.usage import UsageBucket

DAY = 86400
# 2024-03-10 00:00 UTC, a Sunday; the buckets below fall on it and the day after.
D0 = int(datetime(2024, 3, 10, tzinfo=UTC).timestamp())
ALICE, BOB = "a11ce0000000000a", "b0b0000000000b0b"


def bucket(key: str, model: str, start: int, *, batch: bool = False, n: int = 1) -> UsageBucket:
    """A minute of usage: ``n`` requests of 10 prompt and 20 completion tokens each, one of
    them failed when n > 1, priced at 1e-3 and 2e-3 USD a token."""
    return UsageBucket(
        key_id=key,
        model=model,
        batch=batch,
        start=start,
        requests=n,
        failed=1 if n > 1 else 0,
        input_tokens=10 * n,
        output_tokens=20 * n,
        input_cost=0.01 * n,
        output_cost=0.04 * n,
    )


LEDGER = [
    bucket(ALICE, "gpt-4", D0 + 60),  # 00:01
    bucket(ALICE, "gpt-4", D0 + 3 * 3600, n=2),  # 03:00
    bucket(ALICE, "echo", D0 + 3 * 3600 + 120, batch=True, n=3),  # 03:02
    bucket(BOB, "gpt-4", D0 + 3 * 3600 + 60, n=4),  # 03:01
    bucket(BOB, "echo", D0 + DAY + 600, batch=True, n=5),  # the next day, 00:10
]


@pytest.fixture
def book() -> UsageBook:
    """A book holding LEDGER, applied as its reader would (never started: no Kafka)."""
    filled = UsageBook(Settings())
    for b in LEDGER:
        filled.apply(b)
    return filled


def usage(
    book: UsageBook,
    start: int,
    end: int,
    width: str = "1d",
    group_by: Iterable[str] = (),
    *,
    limit: int | None = None,
    page: str | None = None,
    **filters: Any,
) -> UsagePage:
    """What the route answers: the period's page from the book's selection."""
    span = period(start, end, width, limit, page)
    return usage_page(book.select(span.start, span.end, **filters), span, group_by)


def costs(book: UsageBook, start: int, end: int, group_by: Iterable[str] = ()) -> CostsPage:
    span = period(start, end, "1d", costs_limit(None))
    return costs_page(book.select(span.start, span.end), span, group_by)


def rows(page: UsagePage) -> list[tuple[int, str | None, str | None, bool | None, int, int]]:
    """Each result as (bucket start, key, model, batch, requests, failed)."""
    return [
        (b.start_time, r.api_key_id, r.model, r.batch, r.num_model_requests, r.num_failed_requests)
        for b in page.data
        for r in b.results
    ]


# --- buckets ------------------------------------------------------------------------------


def test_a_day_starts_at_midnight_utc_whatever_the_start_time(book: UsageBook) -> None:
    page = usage(book, D0 + 5 * 3600, D0 + DAY + 3600)  # 05:00 to 01:00 the day after
    assert [(b.start_time, b.end_time) for b in page.data] == [
        (D0, D0 + DAY),
        (D0 + DAY, D0 + 2 * DAY),
    ]
    # Snapped outward: the first day's minutes before 05:00 count, as its bucket holds them.
    assert [(r.num_model_requests, r.input_tokens) for r in page.data[0].results] == [(10, 100)]
    assert page.data[1].results[0].num_model_requests == 5


def test_hour_buckets_sum_their_minutes(book: UsageBook) -> None:
    page = usage(book, D0, D0 + 4 * 3600, "1h")
    assert [b.start_time for b in page.data] == [D0 + h * 3600 for h in range(4)]
    counts = [[r.num_model_requests for r in b.results] for b in page.data]
    assert counts == [[1], [], [], [2 + 3 + 4]]


def test_minute_buckets_keep_each_minute(book: UsageBook) -> None:
    page = usage(book, D0 + 3 * 3600, D0 + 3 * 3600 + 180, "1m", ["api_key_id"])
    assert rows(page) == [
        (D0 + 3 * 3600, ALICE, None, None, 2, 1),
        (D0 + 3 * 3600 + 60, BOB, None, None, 4, 1),
        (D0 + 3 * 3600 + 120, ALICE, None, None, 3, 1),
    ]


def test_empty_buckets_are_present_with_no_results(book: UsageBook) -> None:
    page = usage(book, D0 - 2 * DAY, D0)
    assert [(b.start_time, b.results) for b in page.data] == [(D0 - 2 * DAY, []), (D0 - DAY, [])]
    assert page.has_more is False
    assert page.next_page is None


def test_an_empty_or_backward_range_has_no_buckets(book: UsageBook) -> None:
    assert usage(book, D0, D0).data == []
    assert usage(book, D0 + DAY, D0).data == []


# --- grouping and filters -----------------------------------------------------------------


def test_without_group_by_one_result_a_bucket_with_every_group_field_null(book: UsageBook) -> None:
    (day, _) = usage(book, D0, D0 + 2 * DAY).data
    (result,) = day.results
    assert result.model_dump() == {
        "object": "organization.usage.completions.result",
        "input_tokens": 100,
        "output_tokens": 200,
        "input_cached_tokens": 0,
        "input_audio_tokens": 0,
        "output_audio_tokens": 0,
        "num_model_requests": 10,
        "num_failed_requests": 3,
        "project_id": None,
        "user_id": None,
        "api_key_id": None,
        "model": None,
        "batch": None,
    }


@pytest.mark.parametrize(
    ("group_by", "expected"),
    [
        (["model"], [(None, "echo", None, 3, 1), (None, "gpt-4", None, 7, 2)]),
        (["api_key_id"], [(ALICE, None, None, 6, 2), (BOB, None, None, 4, 1)]),
        (["batch"], [(None, None, False, 7, 2), (None, None, True, 3, 1)]),
        (
            ["model", "api_key_id", "batch"],
            [
                (ALICE, "echo", True, 3, 1),
                (ALICE, "gpt-4", False, 3, 1),
                (BOB, "gpt-4", False, 4, 1),
            ],
        ),
        # No projects or users here: grouping by them is grouping by nothing.
        (["project_id", "user_id"], [(None, None, None, 10, 3)]),
    ],
    ids=["model", "key", "batch", "all-three", "project-user"],
)
def test_group_by(book: UsageBook, group_by: list[str], expected: list[tuple[Any, ...]]) -> None:
    page = usage(book, D0, D0 + DAY, "1d", group_by)
    assert [row[1:] for row in rows(page)] == expected


@pytest.mark.parametrize(
    ("filters", "requests"),
    [
        ({"key_ids": [BOB]}, 4),
        ({"models": ["echo"]}, 3),
        ({"batch": True}, 3),
        ({"batch": False}, 7),
        ({"key_ids": [ALICE], "models": ["gpt-4"], "batch": False}, 3),
        ({"key_ids": []}, 0),
    ],
    ids=["key", "model", "batch", "interactive", "all", "no-key"],
)
def test_filters(book: UsageBook, filters: dict[str, Any], requests: int) -> None:
    (day,) = usage(book, D0, D0 + DAY, **filters).data
    assert sum(r.num_model_requests for r in day.results) == requests


def test_an_api_key_sees_its_own_key_only_whatever_it_asks() -> None:
    assert visible_keys(ALICE, False, None) == (ALICE,)
    assert visible_keys(ALICE, False, [ALICE, BOB]) == (ALICE,)
    assert visible_keys(ALICE, False, [BOB]) == ()


def test_an_admin_key_sees_every_key_or_those_it_asks_for() -> None:
    assert visible_keys("admin", True, None) is None
    assert visible_keys("admin", True, [BOB]) == (BOB,)


def test_asking_for_another_keys_id_shows_nothing_of_it(book: UsageBook) -> None:
    keys = visible_keys(ALICE, False, [BOB])
    page = usage(book, D0, D0 + 2 * DAY, "1d", ["api_key_id"], key_ids=keys)
    assert [b.results for b in page.data] == [[], []]


# --- paging and limits --------------------------------------------------------------------


def test_paging_walks_the_whole_range_once(book: UsageBook) -> None:
    start, end = D0 - 3600, D0 + DAY + 3600  # 23:00 the day before to 01:00 the day after
    seen: list[int] = []
    requests = pages = 0
    cursor: str | None = None
    while True:
        page = usage(book, start, end, "1h", limit=5, page=cursor)
        pages += 1
        seen += [b.start_time for b in page.data]
        requests += sum(r.num_model_requests for b in page.data for r in b.results)
        assert len(page.data) <= 5
        assert page.has_more is (page.next_page is not None)
        if not page.has_more:
            break
        cursor = page.next_page
    assert seen == list(range(D0 - 3600, D0 + DAY + 3600, 3600))
    assert pages == math.ceil(len(seen) / 5) == 6
    assert requests == sum(b.requests for b in LEDGER)


def test_a_cursor_names_where_the_next_page_starts() -> None:
    span = period(D0, D0 + 10 * DAY, "1d", 3)
    assert span.starts == (D0, D0 + DAY, D0 + 2 * DAY)
    assert span.next_page is not None
    assert cursor_start(span.next_page) == D0 + 3 * DAY
    after = period(D0, D0 + 10 * DAY, "1d", 3, span.next_page)
    assert after.starts[0] == D0 + 3 * DAY


@pytest.mark.parametrize(
    ("width", "asked", "limit"),
    [
        ("1d", None, 7),
        ("1d", 100, 31),
        ("1h", None, 24),
        ("1h", 1000, 168),
        ("1m", None, 60),
        ("1m", 5000, 1440),
        ("1m", 3, 3),
    ],
)
def test_openai_page_sizes_by_width(width: str, asked: int | None, limit: int) -> None:
    assert usage_limit(width, asked) == limit
    span = period(0, 10**9, width, usage_limit(width, asked))
    assert len(span.starts) == limit


def test_the_costs_page_size_is_seven_days_and_at_most_180() -> None:
    assert (costs_limit(None), costs_limit(365), costs_limit(30)) == (7, 180, 30)


def test_the_last_page_has_no_cursor() -> None:
    span = period(D0, D0 + 3 * DAY, "1d", 3)
    assert (len(span.starts), span.next_page) == (3, None)


# --- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "param", "value"),
    [
        (lambda: period(D0, D0 + DAY, "2d"), "bucket_width", "2d"),
        (lambda: period(-1, D0), "start_time", -1),
        (lambda: period(LAST_TIME + 1, LAST_TIME + 2), "start_time", LAST_TIME + 1),
        (lambda: period(D0, D0 + DAY, "1d", 0), "limit", 0),
        (lambda: period(D0, D0 + DAY, "1d", 7, "next"), "page", "next"),
        (lambda: usage_page([], Period(60, (), None), ["project"]), "group_by", "project"),
        (lambda: costs_page([], Period(60, (), None), ["model"]), "group_by", "model"),
    ],
    ids=["width", "negative-start", "past-9999", "limit", "cursor", "usage-group", "costs-group"],
)
def test_an_invalid_query_names_the_param_and_value(call: Any, param: str, value: Any) -> None:
    with pytest.raises(ReportError) as caught:
        call()
    assert (caught.value.param, caught.value.value) == (param, value)
    assert param in str(caught.value)
    assert repr(value) in str(caught.value)


# --- costs --------------------------------------------------------------------------------


def test_costs_sum_every_line_of_the_day(book: UsageBook) -> None:
    page = costs(book, D0, D0 + 2 * DAY)
    (first,) = page.data[0].results
    assert first.model_dump() == {
        "object": "organization.costs.result",
        "amount": {"value": pytest.approx(0.05 * 10), "currency": "usd"},
        "line_item": None,
        "project_id": None,
        "api_key_id": None,
        "quantity": None,
        "quantity_unit": None,
    }
    assert page.data[1].results[0].amount.value == pytest.approx(0.05 * 5)


def test_costs_by_line_item_are_each_models_input_and_output(book: UsageBook) -> None:
    (day, _) = costs(book, D0, D0 + 2 * DAY, ["line_item"]).data
    lines = {r.line_item: (r.amount.value, r.quantity, r.quantity_unit) for r in day.results}
    expected: dict[str | None, tuple[Any, ...]] = {
        "echo, input": (pytest.approx(0.03), 30, "tokens"),
        "echo, output": (pytest.approx(0.12), 60, "tokens"),
        "gpt-4, input": (pytest.approx(0.07), 70, "tokens"),
        "gpt-4, output": (pytest.approx(0.28), 140, "tokens"),
    }
    assert lines == expected


def test_costs_by_key_and_line_item(book: UsageBook) -> None:
    (day, _) = costs(book, D0, D0 + 2 * DAY, ["api_key_id", "line_item"]).data
    found = [(r.api_key_id, r.line_item, round(r.amount.value, 9)) for r in day.results]
    assert found == [
        (ALICE, "echo, input", 0.03),
        (ALICE, "echo, output", 0.12),
        (ALICE, "gpt-4, input", 0.03),
        (ALICE, "gpt-4, output", 0.12),
        (BOB, "gpt-4, input", 0.04),
        (BOB, "gpt-4, output", 0.16),
    ]


def test_costs_of_chosen_line_items_only(book: UsageBook) -> None:
    span = period(D0, D0 + DAY)
    page = costs_page(book.select(span.start, span.end), span, (), ["gpt-4, output"])
    assert page.data[0].results[0].amount.value == pytest.approx(0.28)


def test_a_day_without_usage_has_no_cost_results(book: UsageBook) -> None:
    page = costs(book, D0 - DAY, D0)
    assert [(b.start_time, b.results) for b in page.data] == [(D0 - DAY, [])]
