"""A batch input file: JSON Lines of ``{"custom_id", "method", "url", "body"}``.

Every line is checked with the rules of its HTTP route: the body model of ``url``
(``/v1/chat/completions``, ``/v1/completions`` or our ``/v1/completion``), every model in the
registry and configured, and the per-model limits (``schemas.limits``). Each
problem names its line number (1-based; blank lines are skipped but counted). ``stream`` is
refused: a batch line is answered in the output file, not as server-sent events.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from producer.jobs.jobfile import (
    BadLine,
    CheckedFile,
    LineProblem,
    check_lines,
    custom_id_of,
    decoded,
)
from producer.refusals import describe_validation
from schemas.api import CompletionRequest
from schemas.batch import ENDPOINTS
from schemas.errors import ModelError
from schemas.limits import first_refusal
from schemas.openai import ChatCompletionsRequest, CompletionsRequest
from schemas.registry import Registry
from schemas.settings import Settings
from schemas.wire import ChatMessage, Sampling

# A chat template's tokens around each message (role markers, separators), and a prompt's
# start and end markers: what a prompt may add to its text's bytes.
_TEMPLATE_TOKENS = 16
_BODIES: dict[str, type[BaseModel]] = {
    "/v1/chat/completions": ChatCompletionsRequest,
    "/v1/completions": CompletionsRequest,
    "/v1/completion": CompletionRequest,
}


@dataclass(frozen=True, slots=True)
class Choice:
    """One task of a line: the model, and the prompt or the conversation."""

    model: str
    prompt: str
    messages: tuple[ChatMessage, ...] | None


@dataclass(frozen=True, slots=True)
class BatchLine:
    """One valid line: its tasks (choice index = position) and their sampling."""

    number: int
    custom_id: str
    url: str
    choices: tuple[Choice, ...]
    sampling: Sampling
    choices_per_prompt: int = 1  # an OpenAI body's n

    @property
    def tasks(self) -> int:
        """One task per choice."""
        return len(self.choices)


@dataclass(frozen=True, slots=True)
class BatchFile(CheckedFile[BatchLine]):
    """The valid lines of an input file and the problems of the others."""

    @property
    def models(self) -> list[str]:
        """Every model the lines name."""
        return sorted({c.model for line in self.lines for c in line.choices})


def parse_batch_file(
    content: bytes,
    registry: Registry,
    settings: Settings,
    endpoint: str | None = None,
) -> BatchFile:
    """Check every line (against ``endpoint`` when the batch names one)."""
    problems: list[LineProblem] = []
    lines = check_lines(
        _numbered(content, settings.batch_max_lines, problems),
        lambda n, line: _batch_line(n, line, registry, settings, endpoint),
        "batch",
        problems,
    )
    if not lines and not problems:
        problems.append(LineProblem(1, "the file has no line"))
    return BatchFile(lines, problems)


def numbered_lines(content: bytes) -> list[tuple[int, bytes]]:
    """The non-blank lines of a file with their (1-based) numbers."""
    return [(n, raw) for n, raw in enumerate(content.split(b"\n"), start=1) if raw.strip()]


def parse_line(
    number: int, raw: bytes, registry: Registry, settings: Settings, endpoint: str
) -> BatchLine:
    """One line checked again (the dispatcher's, as it hands the line out): BadLine if not."""
    problems: list[LineProblem] = []
    parsed = check_lines(
        [(number, raw.decode("utf-8", "replace"))],
        lambda n, line: _batch_line(n, line, registry, settings, endpoint),
        "batch",
        problems,
    )
    if problems:
        raise BadLine(problems[0].reason)
    return parsed[0]


def _numbered(content: bytes, most: int, problems: list[LineProblem]) -> Iterator[tuple[int, str]]:
    for seen, (number, raw) in enumerate(numbered_lines(content)):
        if seen == most:
            problems.append(LineProblem(number, f"more than {most} lines (KC_BATCH_MAX_LINES)"))
            return
        text = decoded(number, raw, problems)
        if text is not None:
            yield number, text


def _batch_line(
    number: int, line: dict[str, Any], registry: Registry, settings: Settings, endpoint: str | None
) -> BatchLine:
    unknown = sorted(set(line) - {"custom_id", "method", "url", "body"})
    if unknown:
        raise BadLine(f"{unknown[0]}: unknown field; a line has custom_id, method, url, body")
    custom_id = custom_id_of(line.get("custom_id"))
    if line.get("method") != "POST":
        raise BadLine(f"method: must be 'POST' (got {line.get('method')!r})")
    url = line.get("url")
    if url not in ENDPOINTS:
        raise BadLine(f"url: must be one of {', '.join(ENDPOINTS)} (got {url!r})")
    if endpoint is not None and url != endpoint:
        raise BadLine(f"url: {url} differs from the batch's endpoint {endpoint}")
    body = line.get("body")
    if not isinstance(body, dict):
        raise BadLine(f"body: must be a JSON object (got {type(body).__name__})")
    choices, sampling, n = _plan(url, _validated(url, body))
    _check_models(choices, sampling, registry, settings)
    return BatchLine(number, custom_id, url, choices, sampling, n)


def _validated(url: str, body: dict[str, Any]) -> BaseModel:
    if body.get("stream"):
        raise BadLine("body.stream: a batch line cannot stream (got True)")
    try:
        return _BODIES[url].model_validate(body)
    except ValidationError as exc:
        # The HTTP routes' wording, so a line and a request are refused the same way.
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        _, detail = describe_validation(errors)
        raise BadLine(f"body.{detail.message}") from exc


def _plan(url: str, body: BaseModel) -> tuple[tuple[Choice, ...], Sampling, int]:
    """The line's tasks, their sampling, and how many choices each prompt has (``n``)."""
    if isinstance(body, CompletionRequest):
        choices = tuple(Choice(m, body.prompt, None) for m in body.models)
        return choices, Sampling.of_request(body), 1
    assert isinstance(body, ChatCompletionsRequest | CompletionsRequest)
    if isinstance(body, ChatCompletionsRequest):
        messages = tuple(ChatMessage(role=m.role, content=m.text) for m in body.messages)
        choices = tuple(Choice(body.model, "", messages) for _ in range(body.n))
        max_tokens = body.token_limit
    else:
        choices = tuple(Choice(body.model, p, None) for p in body.prompts for _ in range(body.n))
        max_tokens = body.max_tokens
    return choices, Sampling.of_openai(body, max_tokens), body.n


def _check_models(
    choices: tuple[Choice, ...], sampling: Sampling, registry: Registry, settings: Settings
) -> None:
    specs = []
    for name in dict.fromkeys(c.model for c in choices):
        try:
            spec = registry.get(name)
        except ModelError as exc:
            raise BadLine(f"body.model: {exc}") from exc
        reason = spec.unavailable_reason(settings)
        if reason is not None:
            raise BadLine(f"body.model: {name}: {reason}")
        specs.append(spec)
    if (refusal := first_refusal(sampling, specs)) is not None:
        raise BadLine(f"body.{refusal.message}")


def most_tokens(lines: Iterable[BatchLine]) -> dict[str, tuple[int, int]]:
    """The most input and output tokens of ``lines``, per model: each prompt's most tokens
    once (OpenAI counts a prompt once for its ``n`` choices) and every choice's
    ``max_tokens``."""
    most: dict[str, tuple[int, int]] = {}
    for line in lines:
        for index, choice in enumerate(line.choices):
            prompt = most_prompt_tokens(choice) if index % line.choices_per_prompt == 0 else 0
            held_in, held_out = most.get(choice.model, (0, 0))
            most[choice.model] = (held_in + prompt, held_out + line.sampling.max_tokens)
    return most


def most_prompt_tokens(choice: Choice) -> int:
    """An upper bound of a prompt's tokens: a byte-level tokenizer's token is at least one
    byte, and the template adds its markers."""
    if choice.messages is None:
        return len(choice.prompt.encode()) + _TEMPLATE_TOKENS
    return sum(len(m.content.encode()) + _TEMPLATE_TOKENS for m in choice.messages)
