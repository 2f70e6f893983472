"""Folding a batch's results into lines, and the lines of its output and error files."""

from __future__ import annotations

import json
import uuid
from typing import Any

from producer.assemble import openai_usage
from producer.jobs.batch.output import LineFold, output_line, render_line
from schemas.openai import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    OpenAIUsage,
    TextChoice,
    TextCompletion,
)
from schemas.wire import ChoiceResult, ResultMessage, TaskError

RID = str(uuid.UUID(int=7))


def result(
    custom_id: str,
    index: int = 0,
    tasks: int = 1,
    error: str | None = None,
    prompt_tokens: int = 3,
    **fields: Any,
) -> ResultMessage:
    common: dict[str, Any] = {
        "request_id": RID,
        "choice_index": index,
        "model": "echo",
        "worker_id": "w",
        "job_id": "batch_1",
        "custom_id": custom_id,
        "line_tasks": tasks,
        **fields,
    }
    if error is not None:
        return ResultMessage(error=TaskError(code=error, message=f"{error}!"), **common)
    choice = ChoiceResult(
        text=f"text {index}",
        finish_reason="length",
        prompt_tokens=prompt_tokens,
        completion_tokens=4,
        prediction_time_ms=5,
        created=1_700_000_000 + index,
    )
    return ResultMessage(choice=choice, **common)


def test_a_line_is_answered_once_all_its_choices_are_and_repeats_count_once() -> None:
    fold = LineFold(total=2)
    assert fold.add(result("a", 0, tasks=2), 10) is None
    copy = result("a", 0, tasks=2).model_copy(update={"worker_id": "other"})
    assert fold.add(copy, 11) is None  # a redelivered copy: the first one counts
    answered = fold.add(result("a", 1, tasks=2), 12)
    assert answered is not None and [r.choice_index for r in answered] == [0, 1]
    assert answered[0].worker_id == "w"
    assert fold.add(result("a", 1, tasks=2), 13) is None
    assert (fold.answered, fold.completed, fold.failed, fold.last_ms) == (1, 1, 0, 12)


def test_failed_cancelled_and_expired_lines_are_told_apart() -> None:
    fold = LineFold(total=4)
    fold.add(result("ok"), 1)
    fold.add(result("bad", error="backend_error"), 2)
    fold.add(result("skipped", error="cancelled"), 3)
    fold.add(result("late", error="deadline_exceeded"), 4)
    assert (fold.completed, fold.failed, fold.cancelled, fold.expired) == (1, 1, 1, 1)
    counts = fold.counts
    assert (counts.total, counts.completed, counts.failed) == (4, 1, 1)


def test_the_fold_sizes_each_file_as_the_rendered_lines() -> None:
    fold = LineFold(total=2, endpoint="/v1/chat/completions")
    ok, bad = [result("ok")], [result("bad", error="backend_error")]
    fold.add(ok[0], 1)
    fold.add(bad[0], 2)
    assert fold.sizes["output"] == [len(render_line("/v1/chat/completions", ok)), 1]
    assert fold.sizes["errors"] == [len(render_line("/v1/chat/completions", bad)), 1]


def test_a_chat_line_has_the_shape_of_the_chat_route_with_usage() -> None:
    results = [result("c", 0, tasks=2), result("c", 1, tasks=2)]
    line = output_line("/v1/chat/completions", results)
    expected = ChatCompletion(
        id=f"chatcmpl-{RID}",
        created=1_700_000_001,
        model="echo",
        choices=[
            ChatChoice(
                index=i, message=AssistantMessage(content=f"text {i}"), finish_reason="length"
            )
            for i in range(2)
        ],
        usage=OpenAIUsage(prompt_tokens=3, completion_tokens=8, total_tokens=11),
    )
    assert line["custom_id"] == "c" and line["error"] is None
    assert line["id"] == f"batch_req_{uuid.UUID(RID).hex}"
    assert line["response"]["status_code"] == 200 and line["response"]["request_id"] == RID
    assert line["response"]["body"] == expected.model_dump(mode="json")


def test_a_completions_line_has_the_shape_of_the_completions_route() -> None:
    line = output_line("/v1/completions", [result("t")])
    expected = TextCompletion(
        id=f"cmpl-{RID}",
        created=1_700_000_000,
        model="echo",
        choices=[TextChoice(text="text 0", index=0, finish_reason="length")],
        usage=OpenAIUsage(prompt_tokens=3, completion_tokens=4, total_tokens=7),
    )
    assert line["response"]["body"] == expected.model_dump(mode="json")


def test_a_completions_line_counts_each_prompt_once_as_the_route_does() -> None:
    # Two prompts (3 and 2 tokens), n=2: tasks 0,1 are of the first prompt, 2,3 of the second.
    results = [
        result("t", i, tasks=4).model_copy(update={"choices_per_prompt": 2}) for i in range(4)
    ]
    for r, tokens in zip(results, [3, 3, 2, 2], strict=True):
        assert r.choice is not None
        object.__setattr__(r.choice, "prompt_tokens", tokens)
    usage = output_line("/v1/completions", results)["response"]["body"]["usage"]
    assert usage == openai_usage(dict(enumerate(results)), 2).model_dump()
    assert usage == {"prompt_tokens": 5, "completion_tokens": 16, "total_tokens": 21}


def test_a_spec_line_is_the_spec_response() -> None:
    body = output_line("/v1/completion", [result("s")])["response"]["body"]
    assert body["id"] == RID and body["choices"][0]["model"] == "echo"
    assert body["usage"]["prediction_time_ms"] == 5


def test_error_lines_name_the_code_and_skipped_lines_say_why() -> None:
    failed = output_line("/v1/completions", [result("f", error="backend_error")])
    assert failed["response"] is None
    assert failed["error"] == {"code": "backend_error", "message": "backend_error!"}
    expired = output_line("/v1/completions", [result("e", error="deadline_exceeded")])
    assert expired["error"]["code"] == "batch_expired"
    cancelled = output_line("/v1/completions", [result("x", error="cancelled")])
    assert cancelled["error"]["code"] == "batch_cancelled"
    assert json.loads(render_line("/v1/completions", [result("x", error="cancelled")])) == cancelled
