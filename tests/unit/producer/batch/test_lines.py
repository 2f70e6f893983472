"""Validating a batch input file, line by line, with the HTTP routes' rules."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from producer.jobs.batch.lines import parse_batch_file
from schemas.batch import UPLOAD_FILE_PATTERN
from schemas.registry import load_registry
from schemas.settings import Settings


def line(i: int, url: str = "/v1/chat/completions", **body: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"model": "echo", "max_tokens": 4}
    if url == "/v1/chat/completions":
        base["messages"] = [{"role": "user", "content": f"hi {i}"}]
    else:
        base["prompt"] = f"hi {i}"
    return {"custom_id": f"r{i}", "method": "POST", "url": url, "body": base | body}


def parse(lines: list[Any], endpoint: str | None = None, **settings: Any) -> Any:
    raw = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines).encode()
    return parse_batch_file(raw, load_registry(), Settings(**settings), endpoint)


def test_valid_lines_of_each_endpoint_become_tasks() -> None:
    chat = parse([line(0, n=2), line(1)])
    assert not chat.problems and chat.tasks == 3 and chat.models == ["echo"]
    assert [len(x.choices) for x in chat.lines] == [2, 1]
    assert chat.lines[0].choices[0].messages is not None
    spec = parse([line(0, "/v1/completion", model=["echo", "echo"]), line(1, "/v1/completion")])
    assert not spec.problems and spec.tasks == 3  # a model list fans out, as on the route
    text = parse([line(0, "/v1/completions", prompt=["a", "b"], n=2)])
    assert [c.prompt for c in text.lines[0].choices] == ["a", "a", "b", "b"]


def test_every_problem_names_its_line_and_field() -> None:
    lines: list[Any] = [
        line(0),
        line(1, temperature=2.5),
        "{not json",
        {"custom_id": "r3", "method": "GET", "url": "/v1/completions", "body": {}},
        line(4, model="no-such-model"),
        line(0),
        {**line(6), "url": "/v1/embeddings"},
        line(7, stream=True),
        line(8, "/v1/completions", stop=["a", "b", "c", "d", "e"], model="gpt-4"),
        {**line(9), "extra": 1},
    ]
    problems = {p.number: p.reason for p in parse(lines, openai_api_key="sk-test").problems}
    assert sorted(problems) == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert problems[2].startswith("body.temperature")
    assert problems[3].startswith("not valid JSON")
    assert problems[4].startswith("method")
    assert problems[5].startswith("body.model: no-such-model")
    assert "already used by line 1" in problems[6]
    assert problems[7].startswith("url")
    assert problems[8].startswith("body.stream")
    assert problems[9].startswith("body.stop: gpt-4 accepts at most 4")
    assert problems[10].startswith("extra: unknown field")


def test_a_value_only_the_model_refuses_is_named_with_its_line() -> None:
    # In the route's ranges, outside the model's: Cohere's penalties, text-davinci-001's context.
    lines = [
        line(0, "/v1/completions", model="cohere-command", presence_penalty=-0.5),
        line(1, "/v1/completions", model="text-davinci-001", max_tokens=2049),
        line(2, "/v1/completions", model="text-davinci-001", max_tokens=2048),
    ]
    keys = {"openai_api_key": "sk-test", "co_api_key": "co-test"}
    problems = {p.number: p.reason for p in parse(lines, **keys).problems}
    assert sorted(problems) == [1, 2]
    assert problems[1].startswith("body.presence_penalty: cohere-command accepts 0 to 2")
    assert problems[2].startswith("body.max_tokens: text-davinci-001 holds 2049 tokens in all")


def test_a_model_that_is_not_configured_is_refused() -> None:
    problems = parse([line(0, model="gpt-4")]).problems
    assert problems and "OPENAI_API_KEY" in problems[0].reason


def test_the_batch_endpoint_must_match_each_line() -> None:
    problems = parse([line(0)], endpoint="/v1/completions").problems
    assert "differs from the batch's endpoint /v1/completions" in problems[0].reason


def test_the_line_limit_is_a_setting() -> None:
    parsed = parse([line(i) for i in range(5)], batch_max_lines=3)
    assert [p.number for p in parsed.problems] == [4]
    assert "KC_BATCH_MAX_LINES" in parsed.problems[0].reason


def test_an_empty_file_is_refused() -> None:
    assert parse([]).problems[0].reason == "the file has no line"


@pytest.mark.parametrize(
    "raw",
    [
        '{"custom_id": "a", "method": "POST", "url": "/v1/completion", '
        '"body": {"model": "echo", "prompt": "x"}}',
        '{"custom_id": "' + "-_Az09" * 10 + 'abcd", "method": "POST", "url": "/v1/completion", '
        '"body": {"model": "echo", "prompt": "' + " " * 64 + '"}}\n',
    ],
    ids=["shortest", "longest"],
)
def test_a_file_the_openapi_document_declares_is_accepted(raw: str) -> None:
    # The upload's schema gives this pattern so that fuzzers send files the server takes.
    assert re.fullmatch(UPLOAD_FILE_PATTERN, raw)
    parsed = parse_batch_file(raw.encode(), load_registry(), Settings())
    assert not parsed.problems and parsed.tasks == 1
