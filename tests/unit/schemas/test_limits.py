"""The per-model rule shared by the front end, job files, batch lines and workers."""

from __future__ import annotations

from schemas.limits import context_refusal, first_refusal
from schemas.registry import ModelSpec
from schemas.wire import Sampling


def _sampling(**fields: object) -> Sampling:
    return Sampling.model_validate({"max_tokens": 16, "temperature": 0.7, "top_p": 1.0} | fields)


def test_the_first_model_that_cannot_serve_is_named() -> None:
    fine = ModelSpec(name="fine", backend="echo")
    picky = ModelSpec(name="picky", backend="echo", max_stop_sequences=1)
    refusal = first_refusal(_sampling(stop=("a", "b")), [fine, picky])
    assert refusal is not None
    assert (refusal.field, refusal.value) == ("stop", ["a", "b"])
    assert refusal.message == "stop: picky accepts at most 1 stop sequences (got 2)"
    assert first_refusal(_sampling(stop=("a",)), [fine, picky]) is None


def test_a_counted_prompt_must_fit_with_max_tokens() -> None:
    assert context_refusal("m", 100, 90, prompt_tokens=10) is None
    refusal = context_refusal("m", 100, 90, prompt_tokens=11)
    assert refusal is not None
    assert (refusal.field, refusal.value) == ("max_tokens", 90)
    assert refusal.message == (
        "prompt is 11 tokens and max_tokens is 90, but m holds 100 tokens in all; "
        "shorten one of them"
    )


def test_before_counting_the_prompt_counts_one_token() -> None:
    assert context_refusal("m", 100, 99) is None
    assert context_refusal("m", 100, 100) is not None
