"""The ledger: decisions leave each partition only as a run of decided offsets, in order."""

from __future__ import annotations

from tests.unit.factories import task
from worker.ledger import Decision, Ledger, Ready
from worker.publish import result_message
from worker.task import Completion, DeadLetter, Failure

A = ("completions.requests.echo", 0)
B = ("completions.requests.echo", 1)


def _done(offset: int, tp: tuple[str, int] = A) -> Decision:
    completion = Completion(
        text=f"t{offset}",
        finish_reason="length",
        prompt_tokens=1,
        completion_tokens=1,
        prediction_time_ms=0,
    )
    done = task(offset=offset, partition=tp[1])
    return done, result_message(done, completion, "w")


def _failed(offset: int) -> Decision:
    failed = task(offset=offset)
    return failed, result_message(failed, Failure(code="backend_error", message="boom"), "w")


def _dead(offset: int) -> Decision:
    return DeadLetter(reason="not JSON", source=f"t:0:{offset}", key=None, value=b"x")


def _by_partition(ready: list[Ready]) -> dict[tuple[str, int], Ready]:
    return {(r.topic, r.partition): r for r in ready}


def test_nothing_taken_nothing_ready() -> None:
    ledger = Ledger()
    assert ledger.ready() == []
    assert ledger.in_flight() == 0
    assert ledger.undecided() == 0


def test_in_order_decisions_are_ready_with_the_next_offset_to_commit() -> None:
    ledger = Ledger()
    for offset in (10, 11, 12):
        ledger.take(A, offset)
    decisions = [_done(10), _failed(11), _dead(12)]
    for offset, decision in zip((10, 11, 12), decisions, strict=True):
        assert ledger.decide(A, offset, decision)
    assert ledger.ready() == [Ready(A[0], A[1], decisions, 13)]


def test_out_of_order_decisions_wait_for_the_head() -> None:
    ledger = Ledger()
    for offset in (0, 1, 2, 3):
        ledger.take(A, offset)
    d = {o: _done(o) for o in range(4)}

    ledger.decide(A, 2, d[2])
    ledger.decide(A, 1, d[1])
    assert ledger.ready() == []  # offset 0 is still undecided

    ledger.decide(A, 0, d[0])
    assert ledger.ready() == [Ready(A[0], A[1], [d[0], d[1], d[2]], 3)]

    ledger.decide(A, 3, d[3])
    assert ledger.ready() == [Ready(A[0], A[1], [d[0], d[1], d[2], d[3]], 4)]


def test_ready_does_not_remove() -> None:
    ledger = Ledger()
    ledger.take(A, 0)
    ledger.decide(A, 0, _done(0))
    first = ledger.ready()
    assert ledger.ready() == first
    assert ledger.in_flight() == 1


def test_settle_removes_what_was_committed_and_keeps_the_rest() -> None:
    ledger = Ledger()
    for offset in (0, 1, 2):
        ledger.take(A, offset)
    ledger.decide(A, 0, _done(0))
    ledger.decide(A, 1, _done(1))
    ready = ledger.ready()

    # A decision and a new record arrive between ready() and settle().
    ledger.decide(A, 2, _done(2))
    ledger.take(A, 3)
    ledger.settle(ready)

    assert ledger.in_flight() == 2
    assert ledger.undecided() == 1
    assert ledger.ready() == [Ready(A[0], A[1], [_done(2)], 3)]


def test_partitions_are_independent() -> None:
    ledger = Ledger()
    for tp in (A, B):
        ledger.take(tp, 0)
        ledger.take(tp, 1)
    ledger.decide(A, 1, _done(1, A))  # A's head is undecided
    ledger.decide(B, 0, _done(0, B))  # B's head is decided
    ready = _by_partition(ledger.ready())
    assert set(ready) == {B}
    assert ready[B].commit_offset == 1
    assert ready[B].decisions == [_done(0, B)]


def test_offsets_with_gaps_commit_past_the_last_decided() -> None:
    # Transactional topics leave gaps (commit markers take offsets).
    ledger = Ledger()
    for offset in (5, 7, 10):
        ledger.take(A, offset)
    ledger.decide(A, 7, _done(7))
    assert ledger.ready() == []
    ledger.decide(A, 5, _done(5))
    ready = ledger.ready()
    assert ready == [Ready(A[0], A[1], [_done(5), _done(7)], 8)]

    ledger.settle(ready)
    assert ledger.in_flight() == 1
    ledger.decide(A, 10, _done(10))
    assert ledger.ready() == [Ready(A[0], A[1], [_done(10)], 11)]


def test_decide_of_an_offset_never_taken_is_refused() -> None:
    ledger = Ledger()
    ledger.take(A, 0)
    assert not ledger.decide(A, 1, _done(1))
    assert not ledger.decide(B, 0, _done(0, B))
    assert ledger.ready() == []


def test_drop_forgets_partitions_and_a_later_decide_returns_false() -> None:
    ledger = Ledger()
    for offset in (0, 1, 2):
        ledger.take(A, offset)
    ledger.take(B, 0)
    ledger.decide(A, 0, _done(0))

    assert ledger.drop([A]) == 3
    assert ledger.decide(A, 1, _done(1)) is False
    assert ledger.in_flight() == 1
    assert ledger.in_flight([A]) == 0
    assert ledger.undecided() == 1
    assert ledger.ready() == []
    assert ledger.drop([A]) == 0


def test_settle_after_drop_is_harmless() -> None:
    ledger = Ledger()
    ledger.take(A, 0)
    ledger.decide(A, 0, _done(0))
    ready = ledger.ready()
    ledger.drop([A])
    ledger.settle(ready)
    assert ledger.in_flight() == 0


def test_retaking_after_drop_starts_fresh() -> None:
    ledger = Ledger()
    ledger.take(A, 0)
    ledger.drop([A])
    ledger.take(A, 0)
    assert ledger.decide(A, 0, _done(0))
    assert ledger.ready() == [Ready(A[0], A[1], [_done(0)], 1)]


def test_in_flight_and_undecided_counts() -> None:
    ledger = Ledger()
    for offset in range(4):
        ledger.take(A, offset)
    for offset in range(2):
        ledger.take(B, offset)
    ledger.decide(A, 1, _done(1))
    ledger.decide(B, 0, _done(0, B))

    assert ledger.in_flight() == 6
    assert ledger.in_flight([A]) == 4
    assert ledger.in_flight([B]) == 2
    assert ledger.in_flight([A, B, ("other", 0)]) == 6
    assert ledger.in_flight([]) == 0
    assert ledger.undecided() == 4

    ledger.settle(ledger.ready())  # only B:0 is at a head
    assert ledger.in_flight() == 5
    assert ledger.undecided() == 4
