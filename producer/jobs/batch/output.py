"""A batch's outcome, line by line: the counts its status shows, and its output files.

Results of a batch's tasks arrive on the batch's own topic (one partition, transactional
writes, read_committed). A line is answered once each of its tasks (``line_tasks``, one per
choice) has a result; the first result of a (custom_id, choice) counts and a later copy (a
task published twice when a creation was retried) is ignored, so every custom_id gets exactly
one line whatever was redelivered. A line succeeds when every choice did; it expired when a
choice met the completion window's end, it was cancelled when its tasks were skipped for a
cancellation; otherwise it failed. ``request_counts.failed`` counts only the failed lines;
expired and cancelled lines are in the error file (codes ``batch_expired``,
``batch_cancelled``) so that the two files hold every custom_id exactly once.

Output lines follow OpenAI's: ``{"id", "custom_id", "response": {"status_code",
"request_id", "body"}, "error": null}`` with the body in the endpoint's shape (usage
included); error-file lines carry ``"response": null`` and ``"error": {"code", "message"}``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

from producer.assemble import openai_usage, to_choice
from producer.jobs.batch.reader import scan
from schemas.api import CompletionResponse, Usage
from schemas.batch import BatchRecord, RequestCounts
from schemas.errors import WireError
from schemas.settings import Settings
from schemas.topics import Topics
from schemas.wire import ChoiceResult, ResultMessage, decode_result

_SKIPPED = {"cancelled": "batch_cancelled", "deadline_exceeded": "batch_expired"}
# The worker_id of the results the dispatcher writes itself: lines it never handed out
# (cancelled, expired) or could no longer read.
DISPATCHER = "kc-dispatcher"
Kind = Literal["output", "errors"]


@dataclass(slots=True)
class LineFold:
    """The results of a batch folded into one outcome per line, as they arrive."""

    total: int
    endpoint: str | None = None  # given: the fold also sizes the two files as lines arrive
    partial: dict[str, dict[int, ResultMessage]] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    expired: int = 0
    last_ms: int = 0
    sizes: dict[Kind, list[int]] = field(
        default_factory=lambda: {"output": [0, 0], "errors": [0, 0]}
    )
    # Results from workers, by model, and the model time they took: what the dispatcher
    # sizes its window by (``dispatch.Window``).
    tasks: dict[str, int] = field(default_factory=dict)
    work_ms: dict[str, int] = field(default_factory=dict)

    def add(self, result: ResultMessage, timestamp_ms: int) -> list[ResultMessage] | None:
        """Count one result; the line's results (by choice) when this one answered it."""
        cid = result.custom_id
        if cid is None or cid in self.done:
            return None
        got = self.partial.setdefault(cid, {})
        if result.choice_index in got:
            return None
        got[result.choice_index] = result
        if result.worker_id != DISPATCHER:
            self.tasks[result.model] = self.tasks.get(result.model, 0) + 1
            took = result.choice.prediction_time_ms if result.choice is not None else 0
            self.work_ms[result.model] = self.work_ms.get(result.model, 0) + took
        if len(got) < (result.line_tasks or 1):
            return None
        del self.partial[cid]
        self.done.add(cid)
        self.last_ms = max(self.last_ms, timestamp_ms)
        results = [got[i] for i in sorted(got)]
        if self.endpoint is not None:
            size = self.sizes[kind_of(results)]
            size[0] += len(render_line(self.endpoint, results))
            size[1] += 1
        errors = [r.error for r in results if r.error is not None]
        if not errors:
            self.completed += 1
        elif any(e.code == "deadline_exceeded" for e in errors):
            self.expired += 1
        elif all(e.code == "cancelled" for e in errors):
            self.cancelled += 1
        else:
            self.failed += 1
        return results

    @property
    def answered(self) -> int:
        """Lines with an outcome."""
        return len(self.done)

    @property
    def counts(self) -> RequestCounts:
        """``request_counts`` as they stand."""
        return RequestCounts(total=self.total, completed=self.completed, failed=self.failed)


async def batch_results(
    settings: Settings, batch_id: str
) -> AsyncIterator[tuple[ResultMessage, int]]:
    """Every committed result on a batch's topic, with its record time (read to the end)."""
    topic = Topics(settings.topic_prefix).batch_results(batch_id)
    async with aclosing(scan(settings, [topic])) as batches:
        async for batch in batches:
            for record in batch:
                try:
                    yield decode_result(record.value), record.timestamp
                except WireError:
                    continue  # not a result of ours: nothing to answer with it


async def render(settings: Settings, batch: BatchRecord, kind: Kind) -> AsyncIterator[bytes]:
    """The lines of a batch's output (successes) or error file, in the order answered."""
    async for line_kind, line in answered_lines(settings, batch):
        if line_kind == kind:
            yield line


async def answered_lines(
    settings: Settings, batch: BatchRecord
) -> AsyncIterator[tuple[Kind, bytes]]:
    """Every line of a batch answered so far, with the file it belongs to, in answered order
    (a running batch's too: ``collect`` writes what is there at its timeout)."""
    fold = LineFold(batch.total)
    async for result, timestamp in batch_results(settings, batch.id):
        results = fold.add(result, timestamp)
        if results is not None:
            yield kind_of(results), render_line(batch.endpoint, results)


def kind_of(results: list[ResultMessage]) -> Kind:
    """Which file an answered line belongs to."""
    return "output" if all(r.choice is not None for r in results) else "errors"


def render_line(endpoint: str, results: list[ResultMessage]) -> bytes:
    """An answered line as written in its file."""
    return (json.dumps(output_line(endpoint, results)) + "\n").encode()


def output_line(endpoint: str, results: list[ResultMessage]) -> dict[str, Any]:
    """The output-file (or error-file) line of one answered batch line."""
    first = results[0]
    line: dict[str, Any] = {
        "id": f"batch_req_{UUID(first.request_id).hex}",
        "custom_id": first.custom_id,
    }
    errors = [r.error for r in results if r.error is not None]
    if errors:
        code = _SKIPPED.get(errors[0].code, errors[0].code)
        return line | {"response": None, "error": {"code": code, "message": errors[0].message}}
    response = {
        "status_code": 200,
        "request_id": first.request_id,
        "body": _body(endpoint, results),
    }
    return line | {"response": response, "error": None}


def _body(endpoint: str, results: list[ResultMessage]) -> dict[str, Any]:
    choices = [r.choice for r in results if r.choice is not None]
    created = max(c.created for c in choices)
    rid = results[0].request_id
    if endpoint == "/v1/completion":
        spec_choices = [to_choice(r) for r in results]
        response = CompletionResponse(
            id=UUID(rid),
            created=datetime.fromtimestamp(created, UTC),
            choices=spec_choices,
            usage=Usage.total([c.usage for c in spec_choices]),
        )
        return response.model_dump(mode="json")
    chat = endpoint == "/v1/chat/completions"
    # The usage the HTTP route reports for the same body: each prompt (or conversation) once.
    n = results[0].choices_per_prompt or (len(results) if chat else 1)
    usage = openai_usage(dict(enumerate(results)), n)
    model = results[0].model
    kind, prefix = ("chat.completion", "chatcmpl") if chat else ("text_completion", "cmpl")
    return {
        "id": f"{prefix}-{rid}",
        "object": kind,
        "created": created,
        "model": model,
        "choices": [_answer(i, c, chat) for i, c in enumerate(choices)],
        "usage": usage.model_dump(),
    }


def _answer(index: int, choice: ChoiceResult, chat: bool) -> dict[str, Any]:
    # A plain dict in the shape of schemas.openai's ChatChoice or TextChoice (a unit test holds
    # them equal): a 100,000-line download builds one per line.
    content: dict[str, Any] = (
        {"message": {"role": "assistant", "content": choice.text}}
        if chat
        else {"text": choice.text}
    )
    return {"index": index, **content, "logprobs": None, "finish_reason": choice.finish_reason}
