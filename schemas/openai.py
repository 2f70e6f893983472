"""OpenAI-compatible bodies: ``/v1/completions`` and ``/v1/chat/completions``.

Shapes follow OpenAI's API reference so the official SDK, LangChain and LlamaIndex work with
only ``base_url`` and ``api_key`` changed. Unknown fields are ignored (clients send many);
fields whose behaviour we do not implement (logprobs, echo, suffix, best_of > 1, tools) are
refused with a 400 naming them rather than silently dropped.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    model_validator,
)

from schemas.api import MODEL_EXAMPLES, MaxTokens, integral

OpenAIFloat = Annotated[StrictFloat, Field(allow_inf_nan=False)]
_UNSUPPORTED = ("logprobs", "top_logprobs", "echo", "suffix", "tools", "functions", "logit_bias")


class StreamOptions(BaseModel):
    """``stream_options``: whether the last chunk carries the usage."""

    include_usage: StrictBool = False


def _declare_unsupported(schema: dict[str, Any]) -> None:
    # Other unknown fields are ignored; these are refused unless empty, so the document says so.
    properties = schema.setdefault("properties", {})
    for name in _UNSUPPORTED:
        properties[name] = {"enum": [None, False, 0, [], {}], "description": "not supported"}
    properties["best_of"] = {"enum": [None, 1], "description": "only 1 is supported"}


class _Common(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, json_schema_extra=_declare_unsupported)

    model: Annotated[str, Field(min_length=1, max_length=128, examples=MODEL_EXAMPLES)]
    temperature: Annotated[OpenAIFloat, Field(ge=0.0, le=2.0)] = 1.0
    top_p: Annotated[OpenAIFloat, Field(ge=0.0, le=1.0)] = 1.0
    n: Annotated[StrictInt, Field(ge=1, le=16), BeforeValidator(integral)] = 1
    stop: str | Annotated[list[str], Field(max_length=16)] | None = None
    presence_penalty: Annotated[OpenAIFloat, Field(ge=-2.0, le=2.0)] = 0.0
    frequency_penalty: Annotated[OpenAIFloat, Field(ge=-2.0, le=2.0)] = 0.0
    # ±2**53: exact in every JSON parser (a float-reading client or fuzzer would round 2**63)
    seed: Annotated[StrictInt, Field(ge=-(2**53), le=2**53), BeforeValidator(integral)] | None = (
        None
    )
    stream: StrictBool = False
    stream_options: StreamOptions | None = None

    @model_validator(mode="after")
    def _refuse_unsupported(self) -> Any:
        extra = self.model_extra or {}
        for name in _UNSUPPORTED:
            if extra.get(name) not in (None, False, 0, [], {}):
                raise ValueError(f"{name} is not supported by this server")
        if extra.get("best_of") not in (None, 1):
            raise ValueError("best_of other than 1 is not supported by this server")
        return self

    @property
    def stops(self) -> tuple[str, ...]:
        """``stop`` as a tuple, whether it came as a string or a list."""
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class CompletionsRequest(_Common):
    """``POST /v1/completions`` (legacy completions)."""

    prompt: str | Annotated[list[str], Field(min_length=1, max_length=16)]
    max_tokens: MaxTokens = 16

    @property
    def prompts(self) -> list[str]:
        """The prompts, one or several."""
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class ContentPart(BaseModel):
    """A text part of a message's content."""

    type: Literal["text"]
    text: str


class InputMessage(BaseModel):
    """A chat message as clients send it."""

    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[ContentPart]

    @property
    def text(self) -> str:
        """The content as one string."""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionsRequest(_Common):
    """``POST /v1/chat/completions``."""

    messages: Annotated[list[InputMessage], Field(min_length=1)]
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = None

    @property
    def token_limit(self) -> int:
        """``max_completion_tokens``, else ``max_tokens``, else our default."""
        from schemas.api import DEFAULT_MAX_TOKENS

        return self.max_completion_tokens or self.max_tokens or DEFAULT_MAX_TOKENS


class OpenAIUsage(BaseModel):
    """OpenAI's usage object."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TextChoice(BaseModel):
    """A choice of a text completion."""

    text: str
    index: int
    logprobs: None = None
    finish_reason: str | None


class TextCompletion(BaseModel):
    """The response of ``/v1/completions``."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[TextChoice]
    usage: OpenAIUsage | None = None


class AssistantMessage(BaseModel):
    """The assistant's answer in a chat choice."""

    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    """A choice of a chat completion."""

    index: int
    message: AssistantMessage
    logprobs: None = None
    finish_reason: str


class ChatCompletion(BaseModel):
    """The response of ``/v1/chat/completions``."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: OpenAIUsage
