"""docs/topics.md, the topics' contract for producers that are not ours, says what the code does.

Every DLQ reason its table shows is the one the worker gives for such a record; its task table
names every task field; the kcat commands it and the README show are the ones
tests/integration/test_kcat.py runs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from schemas.wire import TASK_EXAMPLE_MINIMAL, TaskMessage
from tests.integration.test_kcat import CONSUME, PRODUCE
from worker.admission import Fetched, admit
from worker.task import DeadLetter

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "topics.md"
TOPIC = "completions.requests.echo.bulk"
_TASK = TASK_EXAMPLE_MINIMAL | {"model": "echo"}

# The record each row of the DLQ table describes, by the row's first cell.
RECORDS: dict[str, bytes | None] = {
    "no value (a tombstone)": None,
    "not JSON, not UTF-8": b"\xff\xfe not json",
    "a required field missing": json.dumps({"request_id": "r", "model": "echo"}).encode(),
    "a value out of range or of the wrong type": json.dumps(
        _TASK | {"sampling": {"temperature": 2.5}}
    ).encode(),
    "an unknown field (a misspelt one is never ignored)": json.dumps(
        _TASK | {"max_token": 5}
    ).encode(),
    "another wire version": json.dumps(_TASK | {"v": 2}).encode(),
    "a task of another model": json.dumps(_TASK | {"model": "gpt-4"}).encode(),
    "a `results_topic` that is not a batch's": json.dumps(_TASK | {"results_topic": "x"}).encode(),
}


def _table(heading: str) -> list[list[str]]:
    """The rows (header and rule left out) of the first table after ``heading``."""
    text = DOC.read_text()
    section = text[text.index(f"\n## {heading}\n") :]
    rows = []
    for line in section.splitlines()[1:]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            break
    return rows[2:]


def _reasons() -> list[tuple[str, str]]:
    return [(record, reason.strip("`")) for record, reason in _table("The dead-letter queue")]


def test_the_dlq_table_covers_every_record_kind() -> None:
    assert sorted(record for record, _ in _reasons()) == sorted(RECORDS)


@pytest.mark.parametrize(("record", "documented"), _reasons())
def test_each_documented_dlq_reason_is_the_workers(record: str, documented: str) -> None:
    decision = admit(Fetched(TOPIC, 0, 5, b"k", RECORDS[record]), "echo", 0.0)
    assert isinstance(decision, DeadLetter), record
    pattern = ".*".join(re.escape(part) for part in documented.split("..."))
    assert re.fullmatch(pattern, decision.reason, re.DOTALL), (documented, decision.reason)
    assert decision.source == f"{TOPIC}:0:5"


def test_the_task_table_names_every_task_field() -> None:
    named = {n.strip() for row in _table("Task fields") for n in row[0].replace("`", "").split(",")}
    assert named == set(TaskMessage.model_fields)


def test_the_task_tables_defaults_are_the_models() -> None:
    fields = TaskMessage.model_fields
    for name, default, _ in _table("Task fields"):
        names = [n.strip() for n in name.replace("`", "").split(",")]
        for field in names:
            if default == "required":
                assert fields[field].is_required(), field
            elif default.startswith("`"):
                value = fields[field].default
                shown = value if isinstance(value, str) else json.dumps(value)
                assert shown == default.strip("`"), field
            elif default == "none":
                assert fields[field].default is None, field


@pytest.mark.parametrize("doc", ["README.md", "docs/topics.md"])
def test_the_kcat_commands_shown_are_the_ones_the_test_runs(doc: str) -> None:
    text = " ".join((ROOT / doc).read_text().replace("\\\n", " ").split())
    bootstrap = "127.0.0.1:9092"
    produce = PRODUCE.format(
        bootstrap=bootstrap, topic=TOPIC.replace("echo", "smollm2-135m-instruct")
    )
    assert produce in text
    assert CONSUME.format(bootstrap=bootstrap, topic="completions.results") in text
