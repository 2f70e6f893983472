"""HTTP bodies of ``POST /v1/completion``, field for field and range for range as docs/API.md.

Decisions where the spec is silent (also in docs/API.md):
- ``max_tokens`` defaults to 64 and is capped at 4096; a model may stop earlier at its context.
- ``temperature`` defaults to 1.0 and ``top_p`` to 1.0; temperature 0 means greedy decoding.
- ``stop`` holds at most 16 non-empty strings (a vendor may accept fewer: checked per model).
- ``usage`` of the response is the sum over choices, ``prediction_time_ms`` included.
- Unknown fields are refused, so a misspelt parameter never passes silently.
- Integers follow JSON Schema: ``267.0`` is the integer 267; ``16.5``, ``"16"`` and ``true`` are
  refused.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StringConstraints,
)

DEFAULT_MAX_TOKENS = 64
MAX_MAX_TOKENS = 4096
MAX_STOP_SEQUENCES = 16
MAX_MODELS_PER_REQUEST = 16


def integral(value: Any) -> Any:
    """A float with no fractional part as the int it is (JSON Schema counts 267.0 an integer)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# The validator comes last, so that it runs first and the bounds still reach the JSON schema.
MaxTokens = Annotated[StrictInt, Field(ge=1, le=MAX_MAX_TOKENS), BeforeValidator(integral)]
# A model every registry can serve (echo needs no weights and no key), so that clients and
# fuzzers reading the OpenAPI document reach a model.
MODEL_EXAMPLES = ["echo"]
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=128)]
StopString = Annotated[str, StringConstraints(min_length=1, max_length=256)]
UnitFloat = Annotated[StrictFloat, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
PenaltyFloat = Annotated[StrictFloat, Field(ge=-2.0, le=2.0, allow_inf_nan=False)]


class CompletionRequest(BaseModel):
    """The request body of ``POST /v1/completion``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: Annotated[str, StringConstraints(min_length=1)]
    model: Annotated[
        ModelName
        | Annotated[list[ModelName], Field(min_length=1, max_length=MAX_MODELS_PER_REQUEST)],
        Field(examples=[*MODEL_EXAMPLES, MODEL_EXAMPLES * 2]),
    ]
    max_tokens: MaxTokens = DEFAULT_MAX_TOKENS
    temperature: UnitFloat = 1.0
    top_p: UnitFloat = 1.0
    stop: Annotated[list[StopString], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    presence_penalty: PenaltyFloat = 0.0
    frequency_penalty: PenaltyFloat = 0.0

    @property
    def models(self) -> list[str]:
        """The requested models in choice order (a single name is a list of one)."""
        return [self.model] if isinstance(self.model, str) else list(self.model)


class Usage(BaseModel):
    """Token usage and prediction time of one choice, or of the whole response."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prediction_time_ms: int

    @classmethod
    def total(cls, usages: list[Usage]) -> Usage:
        """The sum of several usages."""
        return cls(
            prompt_tokens=sum(u.prompt_tokens for u in usages),
            completion_tokens=sum(u.completion_tokens for u in usages),
            total_tokens=sum(u.total_tokens for u in usages),
            prediction_time_ms=sum(u.prediction_time_ms for u in usages),
        )


class CompletionChoice(BaseModel):
    """One generated completion: the answer of one entry of ``model``."""

    text: str
    created: int
    model: str
    finish_reason: str
    usage: Usage


class CompletionResponse(BaseModel):
    """The response body of a successful ``POST /v1/completion``."""

    id: UUID
    object: Literal["text_completion"] = "text_completion"
    created: datetime
    choices: list[CompletionChoice]
    usage: Usage


class ChoiceFailure(BaseModel):
    """Why one choice of a request has no completion."""

    index: int
    model: str
    code: str
    message: str


class ErrorDetail(BaseModel):
    """A client or service error: what was wrong and, for a bad field, which and its value."""

    type: str
    code: str
    message: str
    param: str | None = None
    value: Any = None
    models: list[str] | None = None
    choices: list[CompletionChoice] | None = None
    failures: list[ChoiceFailure] | None = None


class ErrorBody(BaseModel):
    """Every error response of the HTTP API has this shape."""

    error: ErrorDetail
