"""Turning results into the HTTP answer: the spec's response, or an error with what arrived."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from producer.refusals import failure_status
from schemas.api import (
    ChoiceFailure,
    CompletionChoice,
    CompletionResponse,
    ErrorBody,
    ErrorDetail,
    Usage,
)
from schemas.wire import ResultMessage


def to_choice(result: ResultMessage) -> CompletionChoice:
    """The spec's CompletionChoice of a successful result."""
    c = result.choice
    assert c is not None
    usage = Usage(
        prompt_tokens=c.prompt_tokens,
        completion_tokens=c.completion_tokens,
        total_tokens=c.prompt_tokens + c.completion_tokens,
        prediction_time_ms=c.prediction_time_ms,
    )
    return CompletionChoice(
        text=c.text,
        created=c.created,
        model=result.model,
        finish_reason=c.finish_reason,
        usage=usage,
    )


def assemble(
    request_id: UUID, models: list[str], results: dict[int, ResultMessage], timeout_s: float
) -> tuple[int, CompletionResponse | ErrorBody]:
    """The status and body for a request whose results are ``results`` (by choice index)."""
    choices = [
        to_choice(results[i]) for i in range(len(models)) if i in results and results[i].choice
    ]
    failures = _failures(models, results, timeout_s)
    if not failures:
        response = CompletionResponse(
            id=request_id,
            created=datetime.now(UTC),
            choices=choices,
            usage=Usage.total([c.usage for c in choices]),
        )
        return 200, response
    status = failure_status([f.code for f in failures])
    summary = "; ".join(f"choice {f.index} ({f.model}): {f.message}" for f in failures)
    detail = ErrorDetail(
        type="timeout" if status == 504 else "completion_failed",
        code=failures[0].code,
        message=f"{len(failures)} of {len(models)} choices failed: {summary}",
        choices=choices,
        failures=failures,
    )
    return status, ErrorBody(error=detail)


def _failures(
    models: list[str], results: dict[int, ResultMessage], timeout_s: float
) -> list[ChoiceFailure]:
    failures = []
    for index, model in enumerate(models):
        result = results.get(index)
        if result is None:
            message = f"no result within the request deadline of {timeout_s:g} s"
            failures.append(
                ChoiceFailure(index=index, model=model, code="deadline_exceeded", message=message)
            )
        elif result.error is not None:
            failures.append(
                ChoiceFailure(
                    index=index, model=model, code=result.error.code, message=result.error.message
                )
            )
    return failures
