"""The bucket ladder a static-shape step's rows and a cache's columns are rounded up to."""

from __future__ import annotations

from worker.buckets import MIN_COLUMNS, column_bucket, row_bucket, row_buckets, rung, rung_below
from worker.kvcache import _capacity

_LADDER = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024]


def test_the_ladder_is_the_powers_of_two_and_the_halves_between() -> None:
    assert row_buckets(1000) == _LADDER
    assert row_buckets(32) == _LADDER[:10]
    assert [rung(r) for r in _LADDER] == _LADDER
    assert [rung_below(r) for r in _LADDER] == _LADDER
    assert rung_below(0) == 1


def test_rows_round_up_with_at_most_a_third_of_padding() -> None:
    assert [row_bucket(n) for n in (1, 5, 7, 9, 13, 17, 25, 33, 100)] == [
        1, 6, 8, 12, 16, 24, 32, 48, 128,
    ]  # fmt: skip
    assert all(row_bucket(n) - n <= row_bucket(n) / 3 for n in range(1, 2000))
    assert all(rung_below(n) <= n < rung(n + 1) for n in range(1, 2000))


def test_cache_columns_round_up_from_the_narrowest_cache() -> None:
    assert column_bucket(1) == MIN_COLUMNS == 64
    assert [column_bucket(n) for n in (64, 65, 97, 200, 4000)] == [64, 96, 128, 256, 4096]


def test_a_cache_capacity_is_on_the_ladder_and_within_the_budget_where_it_can_be() -> None:
    assert _capacity(5, 40, (32, 65_536)) == (8, 96)  # rows to the next power of two
    assert _capacity(20, 40, (20, 65_536)) == (24, 96)  # a row cap off the ladder: up to it
    assert _capacity(32, 100, (32, 4096)) == (32, 128)  # 2 x 100 columns would pass the budget
    assert _capacity(3, 3000, (32, 4096)) == (3, 3072)  # one row's life is over the budget
    for rows, columns in ((5, 40), (20, 40), (32, 100), (3, 3000), (17, 500)):
        got = _capacity(rows, columns, (32, 65_536))
        assert got == (rung(got[0]), column_bucket(got[1]))
        assert got[0] >= rows and got[1] >= columns
