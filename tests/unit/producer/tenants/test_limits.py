"""The limit decisions: rpm, tpm and budget, and a batch's most tokens and cost."""

from __future__ import annotations

from typing import Any

import pytest

from producer.jobs.batch.lines import BatchLine, Choice, most_prompt_tokens, most_tokens
from producer.tenants.limits import check_budget, check_requests, check_tokens, most_cost
from schemas.keys import KeyRecord
from schemas.registry import ModelSpec, Registry
from schemas.wire import ChatMessage, Sampling

NOW = 1_800_000_030.0  # 30 s into a minute


def record(**limits: Any) -> KeyRecord:
    fields: dict[str, Any] = {
        "key_id": "k1",
        "hash": "h",
        "key_name": "sk-kc-...abcd",
        "created_at": 1_800_000_000.0,
        "updated_at": 1_800_000_000.0,
    }
    return KeyRecord(**(fields | limits))


def test_no_limit_refuses_nothing() -> None:
    free = record()
    assert check_tokens(free, 10**9, NOW) is None
    assert check_requests(free, [NOW] * 1000, NOW) is None
    assert check_budget(free, 10**6, NOW, 10**6) is None


def test_rpm_refuses_the_request_past_the_limit_until_the_oldest_place_frees() -> None:
    key = record(rpm_limit=3)
    assert check_requests(key, [NOW - 50, NOW - 10], NOW) is None
    overrun = check_requests(key, [NOW - 50, NOW - 10, NOW - 5], NOW)
    assert overrun is not None and overrun.code == "rate_limit_exceeded"
    assert overrun.retry_after_s == 10  # the request of NOW - 50 leaves the window at NOW + 10
    assert "rpm_limit" in overrun.message and "3" in overrun.message


def test_tpm_refuses_at_the_limit_and_says_when_the_minute_turns() -> None:
    key = record(tpm_limit=100)
    assert check_tokens(key, 99, NOW) is None
    overrun = check_tokens(key, 100, NOW)
    assert overrun is not None and overrun.code == "rate_limit_exceeded"
    assert overrun.retry_after_s == 30


def test_budget_refuses_once_spent_and_retries_at_the_period_end() -> None:
    key = record(max_budget=1.0, budget_duration="1h")
    assert check_budget(key, 0.99, NOW) is None
    overrun = check_budget(key, 1.0, NOW)
    assert overrun is not None and overrun.code == "insufficient_quota"
    assert overrun.retry_after_s == 3600 - 30  # periods count from the key's creation


def test_a_batch_is_refused_when_its_most_cost_would_pass_the_budget() -> None:
    key = record(max_budget=1.0)
    assert check_budget(key, 0.5, NOW, 0.5) is None
    overrun = check_budget(key, 0.5, NOW, 0.51)
    assert overrun is not None and overrun.code == "insufficient_quota"
    assert "this batch may cost up to $0.510000" in overrun.message


def line(choices: list[Choice], max_tokens: int = 10, n: int = 1) -> BatchLine:
    return BatchLine(
        number=1,
        custom_id="c",
        url="/v1/completions",
        choices=tuple(choices),
        sampling=Sampling(max_tokens=max_tokens),
        choices_per_prompt=n,
    )


def test_most_tokens_count_each_prompt_once_and_every_choice_output() -> None:
    prompt = Choice(model="a", prompt="hello", messages=None)  # 5 bytes
    lines = [line([prompt, prompt, prompt], max_tokens=10, n=3), line([prompt], max_tokens=7)]
    bound = most_prompt_tokens(prompt)
    assert bound >= 5
    assert most_tokens(lines) == {"a": (2 * bound, 3 * 10 + 7)}


def test_a_conversation_bounds_every_message() -> None:
    chat = Choice(
        model="a",
        prompt="",
        messages=(
            ChatMessage(role="system", content="be brief"),
            ChatMessage(role="user", content="hé"),
        ),
    )
    assert most_prompt_tokens(chat) >= len(b"be brief") + len("hé".encode())


def test_most_cost_prices_each_model() -> None:
    registry = Registry(
        [
            ModelSpec(
                name="a", backend="echo", input_cost_per_token=1e-6, output_cost_per_token=2e-6
            ),
            ModelSpec(name="free", backend="echo"),
        ]
    )
    cost = most_cost({"a": (1000, 500), "free": (10**6, 10**6), "gone": (5, 5)}, registry)
    assert cost == pytest.approx(1000 * 1e-6 + 500 * 2e-6)
