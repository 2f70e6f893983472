"""Collect's output file and its resume rules: one line per custom_id, ever."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from producer.jobs.collect import OutputFile, read_output
from producer.jobs.jobfile import JobError


def line(custom_id: str, text: str = "hi") -> str:
    body = {"choices": [{"text": text}]}
    response = {"status_code": 200, "request_id": "r", "body": body}
    return json.dumps({"id": "batch_req_1", "custom_id": custom_id, "response": response})


def failure(custom_id: str) -> str:
    error = {"code": "batch_expired", "message": "too late"}
    return json.dumps(
        {"id": "batch_req_1", "custom_id": custom_id, "response": None, "error": error}
    )


def test_output_file_resumes_without_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    first = OutputFile(path)
    for cid in ("a", "b"):
        first.put(line(cid))
    first.close()
    second = OutputFile(path)
    for cid in ("a", "b", "c"):
        second.put(line(cid))
    second.close()
    assert (second.appended, second.replaced) == (1, 0)
    assert [json.loads(t)["custom_id"] for t in path.read_text().splitlines()] == ["a", "b", "c"]


def test_a_changed_outcome_replaces_its_line(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    first = OutputFile(path)
    first.put(failure("a"))
    first.put(line("b"))
    first.close()
    retried = OutputFile(path)
    retried.put(line("a", "answered on retry"))
    retried.close()
    assert (retried.appended, retried.replaced) == (0, 1)
    held = read_output(path)
    assert list(held) == ["a", "b"]
    assert json.loads(held["a"])["response"]["body"]["choices"][0]["text"] == "answered on retry"


def test_a_torn_last_line_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text(line("a") + "\n" + line("b")[:20])
    assert list(read_output(path)) == ["a"]
    assert path.read_text() == line("a") + "\n"


def test_a_line_that_is_not_ours_is_named(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text(line("a") + "\n" + '{"no": "custom_id"}\n')
    with pytest.raises(JobError, match=r"out.jsonl:2 is not a collect output line"):
        read_output(path)
