"""Per-model parameter checks at the front end: a value a model cannot serve is a 422."""

from __future__ import annotations

from typing import Any

import pytest

from producer.refusals import ApiError, check_limits
from schemas.api import CompletionRequest
from schemas.registry import ModelSpec, load_registry
from schemas.wire import Sampling


def _body(**fields: Any) -> Sampling:
    """The sampling parameters of a spec body, as the front end checks them."""
    return Sampling.of_request(CompletionRequest(**({"prompt": "p", "model": "m"} | fields)))


def _specs(*names: str) -> list[ModelSpec]:
    registry = load_registry()
    return [registry.get(name) for name in names]


def test_the_spec_example_passes_for_openai_and_the_local_model() -> None:
    body = _body(stop=["."], presence_penalty=0.5, frequency_penalty=-0.5)
    check_limits(body, _specs("gpt-4", "text-davinci-001", "smollm2-135m-instruct"))


@pytest.mark.parametrize("field", ["presence_penalty", "frequency_penalty"])
def test_a_negative_penalty_is_refused_for_cohere_naming_field_and_value(field: str) -> None:
    with pytest.raises(ApiError) as info:
        check_limits(_body(**{field: -0.5}), _specs("gpt-4", "cohere-command"))
    error = info.value
    assert error.status == 422
    detail = error.detail
    assert (detail.type, detail.code) == ("invalid_request_error", "invalid_value")
    assert (detail.param, detail.value) == (field, -0.5)
    assert detail.message.startswith(f"{field}: cohere-command accepts 0 to 2")
    assert detail.message.endswith("(got -0.5)")


@pytest.mark.parametrize("value", [0.0, 1.0, 2.0])
def test_non_negative_penalties_pass_for_cohere(value: float) -> None:
    body = _body(presence_penalty=value, frequency_penalty=value, top_p=1.0, temperature=0.0)
    check_limits(body, _specs("cohere-command", "cohere-command-light", "cohere-command-nightly"))


@pytest.mark.parametrize(("name", "most"), [("gpt-4", 4), ("cohere-command", 5)])
def test_too_many_stop_sequences_for_the_vendor(name: str, most: int) -> None:
    stops = [f"s{i}" for i in range(most + 1)]
    check_limits(_body(stop=stops[:most]), _specs(name))
    with pytest.raises(ApiError) as info:
        check_limits(_body(stop=stops), _specs(name))
    detail = info.value.detail
    assert (info.value.status, detail.param, detail.value) == (422, "stop", stops)
    assert detail.message == (
        f"stop: {name} accepts at most {most} stop sequences (got {most + 1})"
    )


def test_a_registry_range_narrows_any_field() -> None:
    spec = ModelSpec(name="picky", backend="echo", accepted_ranges={"top_p": (0.1, 0.9)})
    check_limits(_body(top_p=0.5), [spec])
    with pytest.raises(ApiError) as info:
        check_limits(_body(top_p=0.95), [spec])
    assert info.value.detail.message.startswith("top_p: picky accepts 0.1 to 0.9")


def test_a_reversed_range_is_a_registry_error() -> None:
    with pytest.raises(ValueError, match=r"accepted_ranges\.top_p"):
        ModelSpec(name="bad", backend="echo", accepted_ranges={"top_p": (0.9, 0.1)})


def test_max_tokens_that_leaves_no_room_for_a_prompt_is_refused_before_publishing() -> None:
    (spec,) = _specs("text-davinci-001")
    assert spec.context_tokens == 2049
    check_limits(_body(max_tokens=2048), [spec])
    with pytest.raises(ApiError) as info:
        check_limits(_body(max_tokens=2049), [spec])
    detail = info.value.detail
    assert (info.value.status, detail.param, detail.value) == (422, "max_tokens", 2049)
    assert detail.message == (
        "max_tokens: text-davinci-001 holds 2049 tokens in all, prompt included; max_tokens "
        "must be below 2049 (got 2049)"
    )


def test_a_model_without_a_declared_context_leaves_the_count_to_its_worker() -> None:
    spec = ModelSpec(name="open", backend="echo")
    check_limits(_body(max_tokens=4096), [spec])
