"""The CLI and the HTTP Batch API on the same batches: each subcommand, its exit codes."""

from __future__ import annotations

import asyncio
import io
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from schemas.settings import Settings
from tests.conftest import API_KEY, make_settings
from tests.integration.harness import front_end, process_env, wait_live, worker
from tests.integration.test_batches import chat_line, jsonl, until_done

pytestmark = [pytest.mark.kafka]


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str


async def cli(settings: Settings, *args: str) -> Ran:
    """``kafka-completions ARGS`` in its own process (the test's loop keeps serving)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "producer.cli",
        *args,
        env=process_env(settings, KC_LOG_LEVEL="WARNING"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


def batch_id_of(ran: Ran) -> str:
    found = re.search(r"batch (batch_[0-9a-f]+)", ran.out)
    assert found, ran
    return found.group(1)


async def test_a_batch_made_over_http_is_collected_and_listed_by_the_cli(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = make_settings(kafka_bootstrap)
    async with worker(settings, "echo"), front_end(settings) as client:
        await wait_live(client, "echo")
        sdk = openai.AsyncOpenAI(base_url=f"{client.base_url}/v1", api_key=API_KEY, max_retries=0)
        upload = await sdk.files.create(
            file=("in.jsonl", io.BytesIO(jsonl([chat_line(i) for i in range(30)]))),
            purpose="batch",
        )
        batch = await sdk.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        out = tmp_path / "out.jsonl"
        collected = await cli(
            settings,
            "collect",
            "--job",
            batch.id,
            "-o",
            str(out),
            "--timeout",
            "120",
            "--no-progress",
        )
        status = await cli(settings, "jobs", "status", batch.id)
        # A job file beside it: `jobs list` shows both, the job by its name.
        old = tmp_path / "old.jsonl"
        old.write_text(json.dumps({"custom_id": "a", "prompt": "p", "model": "echo"}) + "\n")
        submitted = await cli(settings, "submit", str(old), "--job", "old-1", "--no-progress")
        listed = await cli(settings, "jobs", "list")
        await sdk.close()
    assert collected.code == 0, collected
    lines = [json.loads(t) for t in out.read_text().splitlines()]
    assert sorted(x["custom_id"] for x in lines) == sorted(f"req-{i}" for i in range(30))
    assert (
        status.code == 0 and f"{batch.id}: completed, 30 lines (echo): 30 completed" in status.out
    )
    assert submitted.code == 0, submitted
    assert listed.code == 0, listed
    assert batch.id in listed.out and "old-1" in listed.out
    assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00  ", listed.out, re.M)


async def test_a_batch_submitted_by_the_cli_is_served_over_http(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = make_settings(kafka_bootstrap)
    source = tmp_path / "batch.jsonl"
    source.write_bytes(jsonl([chat_line(i) for i in range(20)]))
    async with worker(settings, "echo"), front_end(settings) as client:
        await wait_live(client, "echo")
        submitted = await cli(settings, "submit", str(source), "--no-progress")
        assert submitted.code == 0, submitted
        batch_id = batch_id_of(submitted)
        sdk = openai.AsyncOpenAI(base_url=f"{client.base_url}/v1", api_key=API_KEY, max_retries=0)
        done = await until_done(sdk, batch_id)
        assert done.status == "completed" and done.output_file_id
        content = (await sdk.files.content(done.output_file_id)).text
        await sdk.close()
    assert len(content.splitlines()) == 20


async def test_refusals_exit_2_and_a_timeout_exits_1_naming_what_is_missing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = make_settings(kafka_bootstrap)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(jsonl([chat_line(0), chat_line(1, temperature=9.0)]))
    refused = await cli(settings, "submit", str(bad), "--no-progress")
    assert refused.code == 2 and "line 2: body.temperature" in refused.err, refused
    unnamed = await cli(settings, "jobs", "status")
    assert unnamed.code == 2 and "name the job or batch" in unnamed.err
    unknown = await cli(settings, "jobs", "status", "batch_0000")
    assert unknown.code == 2 and "no job or batch 'batch_0000'" in unknown.err
    # No worker serves echo: the batch waits, and collect gives up at --timeout.
    good = tmp_path / "good.jsonl"
    good.write_bytes(jsonl([chat_line(i) for i in range(3)]))
    batch_id = batch_id_of(await cli(settings, "submit", str(good), "--no-progress"))
    out = tmp_path / "out.jsonl"
    timed_out = await cli(
        settings, "collect", "--job", batch_id, "-o", str(out), "--timeout", "1", "--no-progress"
    )
    assert timed_out.code == 1, timed_out
    assert "3 line(s) have no outcome yet, e.g. req-0, req-1, req-2" in timed_out.err
    pending = await cli(settings, "jobs", "status", batch_id)
    assert (
        pending.code == 0
        and "in_progress, 3 lines (echo): 0 completed, 0 failed, 3 pending (3 waiting, 0 in flight)"
        in pending.out
    )
