"""The committed JSON Schemas (docs/wire/) are the wire models' own, and hold what we write.

A producer outside this codebase reads only these documents, so: they must be exactly what
``python -m schemas.contract`` generates today; every example in them must be a message our
readers accept; every message our producers write must pass them; and the fewest fields a
hand-written task needs (docs/topics.md) must be enough.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from pydantic import BaseModel

from schemas.api import CompletionRequest
from schemas.contract import DIRECTORY, MESSAGES, main, stale, write
from schemas.wire import (
    TASK_EXAMPLE_MINIMAL,
    CancelMessage,
    DeadLetterHeaders,
    StreamChunk,
    decode_task,
    encode,
)
from tests.unit.factories import error_result, ok_result, sampling, task_message


def _schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DIRECTORY / name).read_text())
    return loaded


def test_the_committed_schemas_are_what_the_models_generate() -> None:
    assert stale() == [], "run: python -m schemas.contract"
    assert main(["--check"]) == 0


def test_a_drifted_or_missing_schema_is_reported(tmp_path: Path) -> None:
    write(tmp_path)
    assert stale(tmp_path) == []
    task = tmp_path / "task.schema.json"
    task.write_text(task.read_text().replace('"prompt"', '"text"'))
    (tmp_path / "cancel.schema.json").unlink()
    assert sorted(stale(tmp_path)) == ["cancel.schema.json", "task.schema.json"]


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_every_example_passes_the_schema_and_the_reader(name: str) -> None:
    schema = _schema(name)
    validator = jsonschema_rs.validator_for(schema)
    assert schema["examples"], f"{name} shows a producer what to send"
    for example in schema["examples"]:
        assert validator.is_valid(example), (name, list(validator.iter_errors(example)))
        MESSAGES[name].model_validate(example)  # raises if our reader refuses it


def _written() -> dict[str, list[BaseModel]]:
    """Messages as our producers build them, fields left out and set."""
    full = task_message(
        choice_index=2,
        sampling=sampling(stop=("\n",), seed=7, presence_penalty=0.5),
        deadline=1_700_000_060.0,
        reply_partition=3,
        key_id="k1",
        lane="bulk",
        job_id="j1",
        custom_id="c1",
        stream=True,
    )
    return {
        "task.schema.json": [task_message(), full],
        "result.schema.json": [ok_result(0, "echo"), error_result(1, "echo", "cancelled", "gone")],
        "stream-chunk.schema.json": [StreamChunk(request_id="r", choice_index=0, seq=0, delta="x")],
        "cancel.schema.json": [CancelMessage(request_id="r")],
        "dlq-headers.schema.json": [DeadLetterHeaders(reason="why", source="t:0:1")],
    }


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_what_our_producers_write_passes_the_committed_schema(name: str) -> None:
    validator = jsonschema_rs.validator_for(_schema(name))
    for message in _written()[name]:
        document = json.loads(
            encode(message)
            if name != "dlq-headers.schema.json"
            else message.model_dump_json(by_alias=True)
        )
        assert validator.is_valid(document), (name, list(validator.iter_errors(document)))


def test_a_task_needs_only_request_id_model_and_prompt() -> None:
    schema = _schema("task.schema.json")
    assert sorted(schema["required"]) == ["model", "prompt", "request_id"]
    task = decode_task(json.dumps(TASK_EXAMPLE_MINIMAL).encode())
    defaults = CompletionRequest(prompt="p", model="m")
    assert (task.v, task.choice_index, task.enqueued_at, task.lane) == (1, 0, None, "interactive")
    assert (task.sampling.max_tokens, task.sampling.temperature, task.sampling.top_p) == (
        defaults.max_tokens,
        defaults.temperature,
        defaults.top_p,
    ), "a task's sampling defaults are /v1/completion's"
