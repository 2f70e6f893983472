"""The admissions log's decision: every front end folds the same records to the same answers."""

from __future__ import annotations

from producer.tenants.admissions import Admission, Admissions
from schemas.settings import Settings


def ask(n: int, at: float, key: str = "k1", limit: int = 3) -> Admission:
    return Admission(id=f"a{n}", key_id=key, at=at, limit=limit)


def fold(asks: list[Admission]) -> list[bool]:
    admissions = Admissions(Settings())
    return [admissions.decide(a) for a in asks]


def test_the_limit_admits_that_many_a_minute_and_refusals_take_no_place() -> None:
    asks = [ask(i, 100.0 + i) for i in range(5)] + [ask(5, 161.0), ask(6, 161.5), ask(7, 162.5)]
    # 100-102 admitted, 103 and 104 refused; at 161, 161.5 and 162.5 the places of 100, 101
    # and 102 have left the window (refusals held none).
    assert fold(asks) == [True, True, True, False, False, True, True, True]


def test_keys_are_counted_apart() -> None:
    asks = [ask(i, 100.0, key="a", limit=1) for i in range(2)]
    asks += [ask(9, 100.0, key="b", limit=1)]
    assert fold(asks) == [True, False, True]


def test_two_folds_of_the_same_log_agree() -> None:
    log = [ask(i, 100.0 + i * 7.3 % 50, limit=4) for i in range(40)]
    assert fold(log) == fold(log)


def test_recent_shows_the_admitted_of_the_last_minute() -> None:
    admissions = Admissions(Settings())
    for a in [ask(0, 100.0), ask(1, 130.0), ask(2, 150.0)]:
        admissions.decide(a)
    assert admissions.recent("k1", 165.0) == [130.0, 150.0]
