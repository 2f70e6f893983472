"""How one committed result is counted in its bucket."""

from __future__ import annotations

import pytest

from producer.tenants.accountant import bucket_of, tally
from schemas.registry import ModelSpec, Registry
from schemas.usage import UsageBucket
from schemas.wire import ResultMessage
from tests.unit.factories import error_result, ok_result

REGISTRY = Registry(
    [ModelSpec(name="m", backend="echo", input_cost_per_token=1e-6, output_cost_per_token=3e-6)]
)
AT = 1_800_000_042.5


def counted(*results: ResultMessage) -> UsageBucket:
    bucket: UsageBucket | None = None
    for result in results:
        bucket = tally(bucket or bucket_of(result, AT), result, REGISTRY)
    assert bucket is not None
    return bucket


def test_a_result_lands_in_its_keys_model_and_minute() -> None:
    result = ok_result(0, "m").model_copy(update={"key_id": "k1"})
    bucket = bucket_of(result, AT)
    assert (bucket.key_id, bucket.model, bucket.batch, bucket.start) == (
        "k1",
        "m",
        False,
        1_800_000_000,
    )
    assert bucket_of(result.model_copy(update={"job_id": "batch_1"}), AT).batch is True
    assert bucket_of(result.model_copy(update={"key_id": None}), AT).key_id == ""


def test_tokens_requests_and_cost_of_one_result() -> None:
    bucket = counted(ok_result(0, "m", prompt_tokens=4, completion_tokens=6))
    assert (bucket.requests, bucket.failed, bucket.input_tokens, bucket.output_tokens) == (
        1,
        0,
        4,
        6,
    )
    assert bucket.input_cost == pytest.approx(4e-6) and bucket.output_cost == pytest.approx(18e-6)


def test_n_choices_of_one_prompt_count_its_tokens_and_the_request_once() -> None:
    choices = [
        ok_result(i, "m", prompt_tokens=4, completion_tokens=6).model_copy(
            update={"choices_per_prompt": 3}
        )
        for i in range(3)
    ]
    bucket = counted(*choices)
    assert (bucket.requests, bucket.input_tokens, bucket.output_tokens) == (1, 4, 18)


def test_a_failure_is_a_failed_request_without_tokens() -> None:
    bucket = counted(error_result(0, "m", "backend_error", "boom"), ok_result(1, "m"))
    assert (bucket.requests, bucket.failed, bucket.input_tokens, bucket.output_tokens) == (
        2,
        1,
        4,
        6,
    )


def test_a_model_the_registry_does_not_price_costs_nothing() -> None:
    bucket = counted(ok_result(0, "elsewhere"))
    assert bucket.cost == 0 and bucket.input_tokens == 4
