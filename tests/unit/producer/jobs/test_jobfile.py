"""Job file validation: every bad line named with its number, nothing half-accepted."""

from __future__ import annotations

import json
from typing import Any

import pytest

from producer.jobs.jobfile import JobFileInvalid, default_job_id, parse_job_file, request_id
from schemas.registry import load_registry

REGISTRY = load_registry()


def line(custom_id: str | None = "a", **overrides: Any) -> str:
    body: dict[str, Any] = {"prompt": "Once upon a time", "model": "echo", "max_tokens": 4}
    if custom_id is not None:
        body["custom_id"] = custom_id
    return json.dumps(body | overrides)


def test_valid_lines_keep_their_numbers_and_blank_lines_count() -> None:
    job = parse_job_file([line("a"), "", line("b", model=["echo", "gpt-4"])], REGISTRY)
    assert job.problems == []
    assert [(j.number, j.custom_id) for j in job.lines] == [(1, "a"), (3, "b")]
    assert job.tasks == 3


def test_out_of_range_and_duplicate_custom_id_name_both_line_numbers() -> None:
    job = parse_job_file([line("a"), line("b", temperature=1.5), line("c"), line("a")], REGISTRY)
    assert [p.number for p in job.problems] == [2, 4]
    assert "temperature" in job.problems[0].reason and "1.5" in job.problems[0].reason
    assert "'a'" in job.problems[1].reason and "line 1" in job.problems[1].reason
    assert [j.custom_id for j in job.lines] == ["a", "c"]
    message = str(JobFileInvalid(job.problems))
    assert "line 2: temperature" in message and "line 4: custom_id" in message
    assert "nothing was published" in message


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        (line(None), "custom_id"),
        (line(""), "custom_id"),
        (line("x", model="gpt-5"), "gpt-5"),
        (line("x", model=["echo", "echo"]), "more than once"),
        (line("x", max_tokens=0), "max_tokens"),
        (line("x", colour="red"), "unknown field"),
        (line("x", prompt=""), "prompt"),
    ],
)
def test_each_kind_of_bad_line_is_explained(raw: str, words: str) -> None:
    job = parse_job_file([line("ok"), raw], REGISTRY)
    assert [p.number for p in job.problems] == [2]
    assert words in job.problems[0].reason
    assert [j.custom_id for j in job.lines] == ["ok"]


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"presence_penalty": -0.5}, "presence_penalty: cohere-command accepts 0 to 2"),
        ({"stop": list("abcdef")}, "stop: cohere-command accepts at most 5 stop sequences"),
    ],
)
def test_a_value_only_the_vendor_refuses_is_named_with_its_line(
    overrides: dict[str, Any], words: str
) -> None:
    # The same values pass the HTTP schema's ranges and the echo model: only the rule of
    # schemas.limits, applied to job lines as to requests, refuses them.
    fine = line("b", model="echo", **overrides)
    job = parse_job_file(
        [line("a"), line("b", model="cohere-command", **overrides), fine], REGISTRY
    )
    assert [p.number for p in job.problems] == [2]
    assert job.problems[0].reason.startswith(words)
    assert [j.number for j in job.lines] == [1, 3]


def test_request_ids_are_deterministic_per_batch_line_and_choice() -> None:
    first = request_id("batch_1", "a", "0")
    assert first == request_id("batch_1", "a", "0")
    others = {request_id("batch_2", "a", "0"), request_id("batch_1", "b", "0")}
    assert len({first, *others, request_id("batch_1", "a", "1")}) == 4


def test_the_default_job_name_follows_the_content() -> None:
    assert default_job_id(b"x") == default_job_id(b"x") != default_job_id(b"y")
