"""Collect's output lines and its resume rules: one line per (custom_id, model), ever."""

from __future__ import annotations

import json
from pathlib import Path

from producer.jobs.collect import OutputFile, read_output
from producer.jobs.tally import JobTally, OutputLine
from schemas.wire import ChoiceResult, ResultMessage, TaskError

RID = "6c1f7a54-8a3e-4f3c-9b0e-5c2d4a7e9f10"


def ok(custom_id: str, model: str = "echo", text: str = "hi") -> ResultMessage:
    choice = ChoiceResult(
        text=text,
        finish_reason="length",
        prompt_tokens=3,
        completion_tokens=2,
        prediction_time_ms=7,
        created=1_700_000_000,
    )
    return ResultMessage(
        request_id=RID,
        choice_index=0,
        model=model,
        worker_id="w",
        choice=choice,
        job_id="j",
        custom_id=custom_id,
    )


def failed(custom_id: str, code: str = "deadline_exceeded") -> ResultMessage:
    error = TaskError(code=code, message="too late")
    return ResultMessage(
        request_id=RID,
        choice_index=0,
        model="echo",
        worker_id="w",
        error=error,
        job_id="j",
        custom_id=custom_id,
    )


def test_success_line_is_the_spec_response_object() -> None:
    body = json.loads(OutputLine.of(ok("a")).dumps())
    assert body["custom_id"] == "a" and body["model"] == "echo" and "error" not in body
    response = body["response"]
    assert response["id"] == RID and response["object"] == "text_completion"
    assert response["created"].startswith("2023-11-14T22:13:20")
    [choice] = response["choices"]
    assert choice["text"] == "hi" and choice["model"] == "echo"
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert choice["usage"] == usage | {"prediction_time_ms": 7}
    assert response["usage"] == choice["usage"]


def test_error_line_carries_code_and_message() -> None:
    body = json.loads(OutputLine.of(failed("b")).dumps())
    assert body == {
        "custom_id": "b",
        "model": "echo",
        "error": {"code": "deadline_exceeded", "message": "too late"},
    }


def test_tally_counts_each_key_once_and_success_wins() -> None:
    tally = JobTally(tasks=3)
    assert tally.add(ok("a"), 1)
    assert not tally.add(ok("a", text="again"), 2)
    assert tally.add(failed("b"), 3)
    assert not tally.add(failed("b", "backend_error"), 4)
    assert tally.add(ok("b"), 5)
    assert (tally.done, tally.failed, tally.pending, tally.tokens) == (2, 0, 1, 10)


def test_errors_before_the_retry_cutoff_are_pending_again() -> None:
    tally = JobTally(tasks=2, retry_cutoff_ms=10)
    assert not tally.add(failed("a"), 9)
    assert tally.add(failed("b"), 11)
    assert (tally.done, tally.failed, tally.pending) == (0, 1, 1)
    assert tally.failed_keys() == {("b", "echo")} and tally.last_error_ms == 11


def test_output_file_resumes_without_duplicates(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    first = OutputFile(out)
    first.put(OutputLine.of(ok("a")))
    first.put(OutputLine.of(failed("b")))
    first.close()
    second = OutputFile(out)
    second.put(OutputLine.of(ok("a")))  # already there: not written again
    second.put(OutputLine.of(ok("c")))
    second.close()
    assert (second.appended, second.replaced) == (1, 0)
    keys = [tuple(json.loads(t)[k] for k in ("custom_id", "model")) for t in out.open()]
    assert keys == [("a", "echo"), ("b", "echo"), ("c", "echo")]


def test_a_changed_outcome_replaces_its_line(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    first = OutputFile(out)
    first.put(OutputLine.of(failed("a")))
    first.put(OutputLine.of(ok("b")))
    first.close()
    retry = OutputFile(out)
    retry.put(OutputLine.of(ok("a")))
    retry.close()
    assert (retry.appended, retry.replaced) == (0, 1)
    lines = [json.loads(t) for t in out.read_text().splitlines()]
    assert [(b["custom_id"], "response" in b) for b in lines] == [("a", True), ("b", True)]


def test_a_torn_last_line_is_dropped(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    whole = OutputLine.of(ok("a")).dumps()
    out.write_text(whole + "\n" + OutputLine.of(ok("b")).dumps()[:20])
    assert list(read_output(out)) == [("a", "echo")]
    assert out.read_text() == whole + "\n"
