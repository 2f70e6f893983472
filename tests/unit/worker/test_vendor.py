"""Vendor plumbing: Retry-After parsing, backoff bounds, key scrubbing, status translation."""

from __future__ import annotations

import email.utils
import time

import pytest

from schemas.registry import ModelSpec, load_registry
from schemas.wire import ErrorCode
from tests.unit.factories import task, task_message
from worker.task import Completion, Failure
from worker.vendor import (
    Fault,
    RetryPolicy,
    VendorGate,
    detail,
    retry_after,
    scrub,
    status_fault,
)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"Retry-After-Ms": "250", "Retry-After": "9"}, 0.25),
        ({"Retry-After": "-4"}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_retry_after_reads_seconds_and_milliseconds(
    headers: dict[str, str] | None, seconds: float | None
) -> None:
    assert retry_after(headers) == seconds


def test_retry_after_reads_an_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    wait = retry_after({"Retry-After": when})
    assert wait is not None and 28 <= wait <= 31


def test_backoff_grows_is_jittered_and_capped() -> None:
    policy = RetryPolicy(max_retries=5, budget_s=60, base_s=1.0, cap_s=4.0)
    fault = Fault("backend_error", "boom", retryable=True)
    for retry, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 4.0)]:
        delays = {policy.delay(fault, retry) for _ in range(20)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1


def test_retry_after_wins_over_backoff() -> None:
    policy = RetryPolicy(max_retries=5, budget_s=60, base_s=0.01, cap_s=0.01)
    delay = policy.delay(Fault("rate_limited", "429", True, retry_after=2.0), 1)
    assert 2.0 <= delay <= 2.2


def test_scrub_replaces_every_copy_of_the_secret() -> None:
    assert scrub("key sk-1 and sk-1 again", "sk-1") == "key [redacted] and [redacted] again"
    assert scrub("nothing", "") == "nothing"


def test_detail_reads_both_vendor_shapes_and_shortens() -> None:
    assert detail({"error": {"message": "bad  \n value"}}) == "bad value"
    assert detail({"message": "cohere says"}) == "cohere says"
    assert detail(b"raw") == "raw"
    assert detail(None) == detail({}) == ""
    assert len(detail("x" * 1000)) == 301


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (400, "invalid_request", False),
        (401, "unauthorized", False),
        (403, "unauthorized", False),
        (404, "invalid_request", False),
        (408, "backend_error", True),
        (422, "invalid_request", False),
        (429, "rate_limited", True),
        (500, "backend_error", True),
        (502, "unavailable", True),
        (503, "unavailable", True),
        (504, "unavailable", True),
    ],
)
def test_status_codes_translate(status: int, code: str, retryable: bool) -> None:
    spec = load_registry().get("gpt-4")
    fault = status_fault("OpenAI", spec, status, "said", {"Retry-After": "2"})
    assert (fault.code, fault.retryable) == (code, retryable)
    assert f"HTTP {status}" in fault.message and "gpt-4" in fault.message
    assert fault.retry_after == (2.0 if retryable else None)


async def test_the_gate_counts_retries_and_429s_in_the_worker_metrics() -> None:
    from prometheus_client import CollectorRegistry

    from schemas.metrics import WorkerMetrics
    from schemas.registry import ModelSpec
    from tests.unit.factories import task
    from worker.task import Completion
    from worker.vendor import Fault, RetryPolicy, VendorGate

    registry = CollectorRegistry()
    metrics = WorkerMetrics.create(registry)
    spec = ModelSpec(name="gpt-4", backend="openai", api_key_env="OPENAI_API_KEY")
    answers: list[Completion | Fault] = [
        Fault("rate_limited", "429", retryable=True, retry_after=0.01),
        Fault("unavailable", "503", retryable=True, retry_after=0.01),
        Completion("ok", "stop", 1, 1, 1),
    ]

    async def attempt(_: object) -> Completion | Fault:
        return answers.pop(0)

    gate = VendorGate(
        spec,
        "OpenAI",
        lambda exc: Fault("backend_error", str(exc)),
        "sk-x",
        RetryPolicy(max_retries=3, budget_s=5),
        metrics,
    )
    outcome = await gate.call(task(), attempt)
    assert isinstance(outcome, Completion)

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert sample("kc_worker_vendor_throttled_total", model="gpt-4") == 1.0
    assert sample("kc_worker_vendor_retries_total", model="gpt-4", reason="rate_limited") == 1.0
    assert sample("kc_worker_vendor_retries_total", model="gpt-4", reason="unavailable") == 1.0


def _gate(max_retries: int = 10, budget_s: float = 30.0) -> VendorGate:
    spec = ModelSpec(name="gpt-4", backend="openai", api_key_env="OPENAI_API_KEY")
    policy = RetryPolicy(max_retries=max_retries, budget_s=budget_s)
    return VendorGate(spec, "OpenAI", lambda exc: Fault("backend_error", str(exc)), "sk-x", policy)


@pytest.mark.parametrize("code", ["unavailable", "rate_limited"])
async def test_retries_stop_before_the_tasks_deadline(code: ErrorCode) -> None:
    # Retry-After 0.2 s, ten retries and a 30 s budget allowed: only the deadline, 0.5 s
    # away, can end this early. Ignoring it would retry for ~2 s.
    calls: list[float] = []

    async def attempt(_: object) -> Completion | Fault:
        calls.append(time.time())
        return Fault(code, "HTTP 503", retryable=True, retry_after=0.2)

    deadline = time.time() + 0.5
    outcome = await _gate().call(task(task_message(deadline=deadline)), attempt)
    assert isinstance(outcome, Failure)
    assert outcome.code == code
    assert time.time() <= deadline
    assert 1 <= len(calls) <= 3
    assert all(at < deadline for at in calls)


async def test_a_task_past_its_deadline_never_calls_the_vendor() -> None:
    async def attempt(_: object) -> Completion | Fault:
        raise AssertionError("the vendor was called for an expired task")

    outcome = await _gate().call(task(task_message(deadline=time.time() - 1)), attempt)
    assert isinstance(outcome, Failure)
    assert outcome.code == "deadline_exceeded"


async def test_without_a_deadline_the_retries_run_to_max_retries() -> None:
    calls = 0

    async def attempt(_: object) -> Completion | Fault:
        nonlocal calls
        calls += 1
        return Fault("unavailable", "HTTP 503", retryable=True, retry_after=0.01)

    outcome = await _gate(max_retries=3).call(task(), attempt)
    assert isinstance(outcome, Failure) and calls == 4
