"""First contact: what a person sees when Kafka is not there, and what `dev` prints to be ready.

Every command that needs Kafka says so in one line naming ``KC_KAFKA_BOOTSTRAP`` and its value
and exits 2, with no traceback and no client library's lines; ``dev`` prints our own lines up
to its ready line, not aiokafka's or uvicorn's.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import httpx
import pytest
from devstack import process

from schemas.settings import Settings
from tests.integration.harness import CLI, process_env

# A port nothing listens on: every connection is refused at once.
_NOWHERE = f"127.0.0.1:{process.free_port()}"
# What `dev` prints up to its ready line on the embedded defaults: the model's state, the
# worker's metrics address, the front end's address, the model loaded, its partitions, the
# worker serving, and the ready line itself (the local-broker line when dev starts one).
_DEV_LINES_AT_MOST = 8


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _without_kafka(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KC_", "OPENAI_", "CO_"))}
    return env | {
        "KC_KAFKA_BOOTSTRAP": _NOWHERE,
        "KC_API_KEYS": "kc-first-contact-key",
        "KC_CACHE_DIR": str(tmp_path / "cache"),
        "KC_PORT": str(process.free_port()),
        "KC_WORKER_METRICS_PORT": "0",
    }


@pytest.mark.parametrize(
    "args",
    [
        ["serve"],
        ["worker", "--model", "echo"],
        ["dev"],
        ["submit", "JOB"],
        ["collect", "--job", "job-1", "-o", "OUT"],
        ["jobs", "status", "job-1"],
        ["jobs", "list"],
        ["keys", "list"],
        ["keys", "create", "--alias", "team-a"],
        ["usage"],
    ],
    ids=[
        "serve",
        "worker",
        "dev",
        "submit",
        "collect",
        "jobs-status",
        "jobs-list",
        "keys-list",
        "keys-create",
        "usage",
    ],
)
def test_a_command_without_kafka_says_so_in_one_line(tmp_path: Path, args: list[str]) -> None:
    job = tmp_path / "job.jsonl"
    job.write_text('{"custom_id": "a", "prompt": "hi", "model": "echo"}\n')
    paths = {"JOB": str(job), "OUT": str(tmp_path / "out.jsonl")}
    done = _run([paths.get(a, a) for a in args], _without_kafka(tmp_path))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert f"KC_KAFKA_BOOTSTRAP={_NOWHERE}" in lines[0] and "cannot reach Kafka" in lines[0]


def test_models_needs_no_kafka(tmp_path: Path) -> None:
    done = _run(["models", "list"], _without_kafka(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "echo" in done.stdout and "configured" in done.stdout
    assert not done.stderr.strip(), done.stderr


@pytest.mark.kafka
@pytest.mark.model
def test_dev_prints_our_own_lines_up_to_ready(settings: Settings, tmp_path: Path) -> None:
    port = process.free_port()
    env = process_env(settings, KC_PORT=str(port))
    env = {k: v for k, v in env.items() if not k.startswith(("OPENAI_", "CO_", "KC_LOG_"))}
    log = tmp_path / "dev.log"
    dev = process.launch([*CLI, "dev"], env=env, log=log)
    try:
        process.wait_ready(lambda: "ready on" in log.read_text(), [dev], "dev", 300)
        # No KC_ADMIN_KEYS: dev made an admin key, shows it on the ready line, and it opens
        # the admin routes.
        shown = re.search(r"admin key (\S+?)\)", log.read_text())
        assert shown, log.read_text()[-2000:]
        auth = {"Authorization": f"Bearer {shown.group(1)}"}
        listed = httpx.get(f"http://127.0.0.1:{port}/key/list", headers=auth, timeout=10)
        assert listed.status_code == 200, listed.text
    finally:
        process.stop(dev)
    printed = log.read_text().splitlines()
    up_to_ready = printed[: next(i for i, line in enumerate(printed) if "ready on" in line) + 1]
    assert len(up_to_ready) <= _DEV_LINES_AT_MOST, "\n".join(up_to_ready)
    for line in up_to_ready:
        assert " aiokafka" not in line and " uvicorn" not in line, line
        assert " WARNING " not in line and " ERROR " not in line, line
        assert "it/s]" not in line, line  # no progress bar
    assert any(f"front end on http://127.0.0.1:{port}" in line for line in up_to_ready)
