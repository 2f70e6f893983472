"""The lane policy: interactive partitions first, bulk only when no interactive work waits."""

from __future__ import annotations

from aiokafka import TopicPartition

from worker.loop import plan_lanes

BULK = "completions.requests.m.bulk"
I0, I1 = TopicPartition("completions.requests.m", 0), TopicPartition("completions.requests.m", 1)
B0, B1 = TopicPartition(BULK, 0), TopicPartition(BULK, 1)
ALL = {I0, I1, B0, B1}


def plan(**kw: object) -> tuple[set[TopicPartition], set[TopicPartition], int]:
    args: dict[str, object] = {
        "capacity": 32,
        "in_flight": 0,
        "bulk_in_flight": 0,
        "interactive_busy": False,
        "throttled": False,
    } | kw
    p = plan_lanes(ALL, BULK, **args)  # type: ignore[arg-type]
    return p.pause, p.fetch, p.max_records


def test_idle_worker_fetches_both_lanes_but_bulk_takes_half_the_capacity() -> None:
    assert plan() == (set(), ALL, 16)
    assert plan(in_flight=10, bulk_in_flight=10) == (set(), ALL, 6)


def test_bulk_is_paused_while_interactive_work_waits_or_runs() -> None:
    assert plan(interactive_busy=True) == ({B0, B1}, {I0, I1}, 32)
    assert plan(interactive_busy=True, in_flight=20, bulk_in_flight=16) == ({B0, B1}, {I0, I1}, 12)


def test_a_full_bulk_share_polls_only_interactive_without_pausing_bulk() -> None:
    assert plan(in_flight=16, bulk_in_flight=16) == (set(), {I0, I1}, 16)


def test_no_room_or_throttled_pauses_everything() -> None:
    assert plan(in_flight=32, bulk_in_flight=16)[0] == ALL
    assert plan(throttled=True)[0] == ALL


def test_a_capacity_of_one_still_serves_bulk() -> None:
    assert plan(capacity=1) == (set(), ALL, 1)
