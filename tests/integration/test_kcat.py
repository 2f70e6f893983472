"""A producer that is not ours: kcat (librdkafka) writes bulk tasks from the contract's examples.

It uses only what the repository documents (docs/wire/task.schema.json, docs/topics.md, the
README's two commands): tasks go to ``completions.requests.<model>.bulk``, results are read
read_committed from ``completions.results``, malformed records land on ``completions.dlq`` with
their reason while every good task is answered exactly once. The worker is the real command
in its own process.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from devstack import process

from schemas.contract import DIRECTORY
from schemas.kafka import ensure_topics
from schemas.settings import Settings
from schemas.topics import Topics
from schemas.wire import DLQ_REASON, DLQ_SOURCE
from tests.integration.harness import LOCAL, worker_process

pytestmark = [pytest.mark.kafka]

# The README's two commands (tests/unit/test_topics_doc.py holds the README to them).
PRODUCE = "kcat -P -b {bootstrap} -t {topic} -K '\\t' -X enable.idempotence=true"
CONSUME = "kcat -C -b {bootstrap} -t {topic} -o beginning -e -J -X isolation.level=read_committed"
GOOD = 20


def _examples() -> list[dict[str, Any]]:
    schema = json.loads((DIRECTORY / "task.schema.json").read_text())
    examples: list[dict[str, Any]] = schema["examples"]
    return examples


def _malformed(model: str) -> dict[str, tuple[str, str]]:
    """Key -> (value, what its DLQ reason must name)."""
    minimal = _examples()[0] | {"model": model}
    return {
        "bad-json": ('{"request_id": "bad-json", "model": "echo"', "Invalid JSON"),
        "bad-range": (
            json.dumps(minimal | {"request_id": "bad-range", "sampling": {"temperature": 3}}),
            "sampling.temperature",
        ),
        "bad-field": (
            json.dumps(minimal | {"request_id": "bad-field", "max_token": 5}),
            "max_token",
        ),
        "bad-missing": (json.dumps({"request_id": "bad-missing", "model": model}), "prompt"),
    }


async def _kcat(command: str, stdin: bytes = b"", timeout_s: float = 60) -> bytes:
    binary = shutil.which("kcat")
    assert binary, "no kcat: scripts/install-tools.sh installs Debian's package"
    argv = [binary, *command.split()[1:]]
    argv = [a.strip("'").replace("\\t", "\t") if a == "'\\t'" else a for a in argv]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout_s)
    assert proc.returncode == 0, (argv, err.decode())
    return out


async def _read(
    settings: Settings, topic: str, want: int, timeout_s: float
) -> list[dict[str, Any]]:
    """kcat's read_committed view of ``topic``, once it holds ``want`` records (or the timeout)."""
    command = CONSUME.format(bootstrap=settings.kafka_bootstrap, topic=topic)
    deadline = time.monotonic() + timeout_s
    while True:
        lines = (await _kcat(command)).decode().splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
        if len(records) >= want or time.monotonic() > deadline:
            return records
        await asyncio.sleep(1)


def _headers(record: dict[str, Any]) -> dict[str, str]:
    flat: list[str] = record.get("headers") or []
    return dict(zip(flat[::2], flat[1::2], strict=True))


async def _publish(settings: Settings, topic: str, lines: list[tuple[str, str]]) -> None:
    stdin = "".join(f"{key}\t{value}\n" for key, value in lines).encode()
    await _kcat(PRODUCE.format(bootstrap=settings.kafka_bootstrap, topic=topic), stdin)


async def test_kcat_bulk_tasks_are_answered_once_and_malformed_ones_dead_lettered(
    settings: Settings, tmp_path: Path
) -> None:
    topics = Topics(settings.topic_prefix)
    await ensure_topics(settings, ["echo"])  # as a deployment has them, before any producer
    examples = _examples()
    good = []
    for i in range(GOOD):
        task = examples[i % len(examples)] | {"request_id": f"kcat-{i}", "model": "echo"}
        task |= {"custom_id": f"line-{i}"} if "job_id" in task else {}
        good.append((f"kcat-{i}", json.dumps(task)))
    bad = _malformed("echo")
    lines = good[:7] + [(k, v) for k, (v, _) in bad.items()] + good[7:]
    worker = worker_process(settings, "echo")
    try:
        await _publish(settings, topics.bulk("echo"), lines)
        results = await _read(settings, topics.results, GOOD, timeout_s=120)
        dead = await _read(settings, topics.dlq, len(bad), timeout_s=30)
        await asyncio.sleep(2)
        again = await _read(settings, topics.results, GOOD + 1, timeout_s=0)
        assert worker.poll() is None, "the worker keeps running"
    finally:
        process.stop(worker)
    validator = jsonschema_rs.validator_for(
        json.loads((DIRECTORY / "result.schema.json").read_text())
    )
    sent = dict(good)
    assert sorted(r["key"] for r in again) == sorted(sent), "each task answered exactly once"
    for record in results:
        result = json.loads(record["payload"])
        task = json.loads(sent[record["key"]])
        assert validator.is_valid(result), list(validator.iter_errors(result))
        assert result["request_id"] == record["key"] and result["choice_index"] == 0
        usage = result["choice"]
        assert usage["completion_tokens"] == task.get("sampling", {}).get("max_tokens", 64)
        assert usage["prompt_tokens"] > 0 and result["queued_ms"] >= 0
        assert (result.get("job_id"), result.get("custom_id")) == (
            task.get("job_id"),
            task.get("custom_id"),
        ), "a job's ids come back on its results"
    assert sorted(r["key"] for r in dead) == sorted(bad)
    for record in dead:
        value, word = bad[record["key"]]
        headers = _headers(record)
        assert record["payload"] == value, "the DLQ keeps the original value"
        assert word in headers[DLQ_REASON], (record["key"], headers)
        assert headers[DLQ_SOURCE].startswith(f"{topics.bulk('echo')}:")


@pytest.mark.model
async def test_kcat_publishes_the_schema_examples_verbatim_to_the_local_model(
    settings: Settings,
) -> None:
    topics = Topics(settings.topic_prefix)
    await ensure_topics(settings, [LOCAL])
    examples = _examples()
    assert {e["model"] for e in examples} == {LOCAL}, "the examples name the embedded model"
    worker = worker_process(settings, LOCAL)
    try:
        await _publish(
            settings, topics.bulk(LOCAL), [(e["request_id"], json.dumps(e)) for e in examples]
        )
        results = await _read(settings, topics.results, len(examples), timeout_s=240)
    finally:
        process.stop(worker)
    by_id = {r["key"]: json.loads(r["payload"]) for r in results}
    assert sorted(by_id) == sorted(e["request_id"] for e in examples)
    for example in examples:
        result = by_id[example["request_id"]]
        assert result["model"] == LOCAL and result["choice"]["text"], result
        assert (
            0
            < result["choice"]["completion_tokens"]
            <= example.get("sampling", {}).get("max_tokens", 64)
        )
        assert result.get("custom_id") == example.get("custom_id")
