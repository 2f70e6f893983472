"""Per-model limits: the one rule deciding which sampling values a model cannot serve.

A request's route already holds its ranges (``schemas.api``, ``schemas.openai``); a model may
accept less: fewer stop sequences (``max_stop_sequences``), a narrower range of a field its
vendor cannot map (``accepted_ranges``: Cohere has no negative penalty), or fewer tokens than
the prompt and ``max_tokens`` need (``context_tokens``). The front end (HTTP routes), the bulk
job client (job files) and the Batch API (input lines) refuse with this rule before anything is
published, each in its own words around the same message; a worker applies the context rule
again once it has counted the prompt's tokens, which only its tokenizer can.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from schemas.registry import ModelSpec
from schemas.wire import Sampling


@dataclass(frozen=True, slots=True)
class Refusal:
    """A value one model cannot serve: the field, the value, and why (``field: ...``)."""

    field: str
    value: Any
    message: str


def first_refusal(sampling: Sampling, specs: Iterable[ModelSpec]) -> Refusal | None:
    """The first value of ``sampling`` one of ``specs`` cannot serve, or None."""
    for spec in specs:
        if (refusal := model_refusal(sampling, spec)) is not None:
            return refusal
    return None


def model_refusal(sampling: Sampling, spec: ModelSpec) -> Refusal | None:
    """Why ``spec`` cannot serve ``sampling`` (stop count, vendor ranges, context), or None."""
    count = len(sampling.stop)
    if count > spec.max_stop_sequences:
        why = f"{spec.name} accepts at most {spec.max_stop_sequences} stop sequences (got {count})"
        return Refusal("stop", list(sampling.stop), f"stop: {why}")
    for field, (low, high) in spec.accepted_ranges.items():
        value = getattr(sampling, field)
        if not low <= value <= high:
            why = (
                f"{spec.name} accepts {low:g} to {high:g}, as its vendor cannot map the rest of "
                f"the range (got {value})"
            )
            return Refusal(field, value, f"{field}: {why}")
    if spec.context_tokens is not None:
        return context_refusal(spec.name, spec.context_tokens, sampling.max_tokens)
    return None


def context_refusal(
    model: str, context: int, max_tokens: int, prompt_tokens: int | None = None
) -> Refusal | None:
    """A prompt and ``max_tokens`` that do not fit in ``context`` tokens, or None.

    Without ``prompt_tokens`` (before tokenising) the prompt counts as one token: a
    ``max_tokens`` that leaves no room for any prompt is refused as early as it can be.
    """
    if (prompt_tokens or 1) + max_tokens <= context:
        return None
    if prompt_tokens is None:
        why = (
            f"{model} holds {context} tokens in all, prompt included; max_tokens must be "
            f"below {context} (got {max_tokens})"
        )
        return Refusal("max_tokens", max_tokens, f"max_tokens: {why}")
    why = (
        f"prompt is {prompt_tokens} tokens and max_tokens is {max_tokens}, but {model} holds "
        f"{context} tokens in all; shorten one of them"
    )
    return Refusal("max_tokens", max_tokens, why)
