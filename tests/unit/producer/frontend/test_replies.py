"""The reply router's bookkeeping of early and committed copies of results."""

from __future__ import annotations

import pytest
from aiokafka import ConsumerRecord
from prometheus_client import CollectorRegistry

from producer.frontend import replies
from producer.frontend.replies import ReplyRouter
from schemas.kafka import Record
from schemas.metrics import FrontendMetrics
from schemas.wire import encode
from tests.conftest import make_settings
from tests.unit.factories import ok_result


def _router() -> tuple[ReplyRouter, FrontendMetrics]:
    metrics = FrontendMetrics.create(CollectorRegistry())
    return ReplyRouter(make_settings("127.0.0.1:1"), metrics), metrics


def _result(request_id: str, index: int = 0, text: str = "hi") -> bytes:
    return encode(ok_result(index, "echo", text=text, request_id=request_id))


def _committed(value: bytes | None, key: str) -> Record:
    return ConsumerRecord("results", 0, 0, 0, 0, key.encode(), value, None, 0, 0, [])


def _unmatched(metrics: FrontendMetrics) -> float:
    return float(metrics.results_unmatched._value.get())


async def test_an_early_copy_answers_and_its_committed_copy_is_not_unmatched() -> None:
    router, metrics = _router()
    pending = router.expect("r1", 2)
    router.deliver_early(_result("r1", 0, "early"))
    router.deliver_early(_result("r1", 1, "early"))
    answers = await pending.wait(1)
    assert {i: a.choice.text for i, a in answers.items() if a.choice} == {0: "early", 1: "early"}
    router.forget("r1")
    router._route(_committed(_result("r1", 0, "committed"), "r1"))
    router._route(_committed(_result("r1", 1, "committed"), "r1"))
    assert _unmatched(metrics) == 0
    # Both confirmations were used up: a third copy (a rerun's) is unmatched again.
    router._route(_committed(_result("r1", 1), "r1"))
    assert _unmatched(metrics) == 1


async def test_the_committed_copy_first_answers_and_the_late_early_copy_is_dropped() -> None:
    router, metrics = _router()
    pending = router.expect("r2", 1)
    router._route(_committed(_result("r2", 0, "committed"), "r2"))
    router.deliver_early(_result("r2", 0, "early"))
    answers = await pending.wait(1)
    assert answers[0].choice is not None and answers[0].choice.text == "committed"
    assert _unmatched(metrics) == 0
    router.forget("r2")
    router._route(_committed(_result("r2", 0), "r2"))
    assert _unmatched(metrics) == 1, "a copy nobody waits for is unmatched"


async def test_results_nobody_waits_for_and_garbage_are_unmatched() -> None:
    router, metrics = _router()
    router.deliver_early(_result("nobody"))
    router.deliver_early(b"not json")
    assert _unmatched(metrics) == 0, "early copies are best effort: never counted"
    router._route(_committed(_result("nobody"), "nobody"))
    router._route(_committed(b"not json", "x"))
    assert _unmatched(metrics) == 2


async def test_the_memory_of_early_answers_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    router, metrics = _router()
    monkeypatch.setattr(replies, "_EARLY_MEMORY", 3)
    for i in range(5):
        router.expect(f"r{i}", 1)
        router.deliver_early(_result(f"r{i}"))
        router.forget(f"r{i}")
    assert len(router._answered_early) == 3
    router._route(_committed(_result("r0"), "r0"))  # pushed out: counted
    router._route(_committed(_result("r4"), "r4"))  # remembered: not counted
    assert _unmatched(metrics) == 1
