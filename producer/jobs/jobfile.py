"""A bulk job file: JSON Lines, each a ``/v1/completion`` body plus a ``custom_id``.

Every line is checked before anything is published, with the same ranges as the HTTP API, and
each problem names its line number (1-based; blank lines are skipped but still counted). A
line's models must be in the registry, listed once each (a job answers one line per
(``custom_id``, model)), and able to serve its values (``schemas.limits``: stop sequences,
vendor ranges, context), as the HTTP routes refuse them.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from pydantic import ValidationError

from producer.refusals import describe_validation
from schemas.api import CompletionRequest
from schemas.errors import KCError, ModelError
from schemas.limits import first_refusal
from schemas.registry import Registry
from schemas.wire import Sampling

MAX_CUSTOM_ID_CHARS = 256
# Request ids of batch tasks are uuid5(namespace, batch/custom_id/choice): the same choice of
# the same line always gets the same id, whoever publishes it and however often.
_REQUEST_ID_NAMESPACE = uuid.UUID("6c1f7a54-8a3e-4f3c-9b0e-5c2d4a7e9f10")
LineT = TypeVar("LineT", bound="CheckedLine")


class JobError(KCError):
    """A bulk job cannot be submitted or collected as asked (a KCError: the CLI exits 2)."""


class JobFileInvalid(JobError):
    """A job file has invalid lines; nothing was published."""

    def __init__(self, problems: list[LineProblem]) -> None:
        listed = "\n".join(f"  {p}" for p in problems)
        super().__init__(
            f"the job file has {len(problems)} invalid line(s); nothing was published "
            f"(fix them, or --skip-invalid to publish the rest):\n{listed}"
        )
        self.problems = problems


@dataclass(frozen=True, slots=True)
class JobLine:
    """One valid line of a job file."""

    number: int
    custom_id: str
    request: CompletionRequest

    @property
    def tasks(self) -> int:
        """One task per model of the line."""
        return len(self.request.models)


class CheckedLine(Protocol):
    """A valid line of a checked file: its custom_id, and the tasks it makes."""

    @property
    def custom_id(self) -> str:
        """The caller's id of the line, unique in its file."""
        ...

    @property
    def tasks(self) -> int:
        """How many tasks the line makes."""
        ...


@dataclass(frozen=True, slots=True)
class CheckedFile(Generic[LineT]):
    """The valid lines of a checked file (a job or a batch input), and the others' problems."""

    lines: list[LineT]
    problems: list[LineProblem]

    @property
    def tasks(self) -> int:
        """How many tasks the valid lines make."""
        return sum(line.tasks for line in self.lines)


@dataclass(frozen=True, slots=True)
class LineProblem:
    """Why one line of a job file cannot be published."""

    number: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.number}: {self.reason}"


@dataclass(frozen=True, slots=True)
class JobFile(CheckedFile[JobLine]):
    """The valid lines of a job file, and the problems of the others."""


def request_id(batch_id: str, custom_id: str, choice: str) -> str:
    """The deterministic request id of one (batch, custom_id, choice) task."""
    return str(uuid.uuid5(_REQUEST_ID_NAMESPACE, f"{batch_id}\n{custom_id}\n{choice}"))


def default_job_id(data: bytes) -> str:
    """The job id of a file submitted without ``--job``: derived from its bytes."""
    return "job-" + hashlib.sha256(data).hexdigest()[:16]


def parse_job_file(raw_lines: Iterable[str], registry: Registry) -> JobFile:
    """Check every line; the valid ones and each problem with its line number."""
    numbered = ((n, raw) for n, raw in enumerate(raw_lines, start=1) if raw.strip())
    problems: list[LineProblem] = []
    lines = check_lines(numbered, lambda n, body: _job_line(n, body, registry), "job", problems)
    return JobFile(lines, problems)


class BadLine(Exception):
    """Why one line of a checked file cannot be used: its LineProblem's reason."""


def check_lines(
    numbered: Iterable[tuple[int, str]],
    parse: Callable[[int, dict[str, Any]], LineT],
    scope: str,
    problems: list[LineProblem],
) -> list[LineT]:
    """The lines ``parse`` makes of each JSON object; a problem for each other line."""
    lines: list[LineT] = []
    ids = UniqueIds(scope)
    for number, raw in numbered:
        try:
            line = parse(number, _json_object(raw))
        except BadLine as exc:
            problems.append(LineProblem(number, str(exc)))
            continue
        if (repeated := ids.problem(number, line.custom_id)) is not None:
            problems.append(repeated)
            continue
        lines.append(line)
    return lines


def decoded(number: int, raw: bytes, problems: list[LineProblem]) -> str | None:
    """A line's text; None, and its problem, when it is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.append(LineProblem(number, f"not UTF-8: {exc.reason} at byte {exc.start}"))
        return None


def custom_id_of(value: Any) -> str:
    """A line's ``custom_id``, or the BadLine saying what it must be."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_CUSTOM_ID_CHARS:
        raise BadLine(
            f"custom_id: required, a non-empty string of at most {MAX_CUSTOM_ID_CHARS} "
            f"characters (got {value!r})"
        )
    return value


class UniqueIds:
    """Refuses a custom_id already used by an earlier line of the same file."""

    def __init__(self, scope: str) -> None:
        self._scope = scope
        self._first: dict[str, int] = {}

    def problem(self, number: int, custom_id: str) -> LineProblem | None:
        """The problem of line ``number`` when its custom_id was seen before, else None."""
        first = self._first.setdefault(custom_id, number)
        if first == number:
            return None
        return LineProblem(
            number,
            f"custom_id {custom_id!r} is already used by line {first}; "
            f"custom_id must be unique within a {self._scope}",
        )


def _json_object(raw: str) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadLine(f"not valid JSON: {exc.msg} at column {exc.colno}") from exc
    if not isinstance(body, dict):
        raise BadLine(f"must be a JSON object, got {type(body).__name__}")
    return body


def _job_line(number: int, body: dict[str, Any], registry: Registry) -> JobLine:
    custom_id = custom_id_of(body.pop("custom_id", None))
    request = _request(body)
    _check_models(request, registry)
    return JobLine(number, custom_id, request)


def _request(body: dict[str, Any]) -> CompletionRequest:
    try:
        return CompletionRequest.model_validate(body)
    except ValidationError as exc:
        # The HTTP API's wording, so a job file and a request are refused the same way.
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        _, detail = describe_validation(errors)
        raise BadLine(detail.message) from exc


def _check_models(request: CompletionRequest, registry: Registry) -> None:
    models = request.models
    repeated = sorted({m for m in models if models.count(m) > 1})
    if repeated:
        raise BadLine(
            f"model: {', '.join(repeated)} listed more than once; a job answers each "
            "(custom_id, model) once (use another custom_id for another sample)"
        )
    specs = []
    for name in models:
        try:
            specs.append(registry.get(name))
        except ModelError as exc:
            raise BadLine(f"model: {exc}") from exc
    if (refusal := first_refusal(Sampling.of_request(request), specs)) is not None:
        raise BadLine(refusal.message)
