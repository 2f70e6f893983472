"""A second process on a port one already holds stops with one line naming the setting."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from devstack import process

from schemas.settings import Settings
from tests.integration.harness import CLI, answers, process_env

pytestmark = [pytest.mark.kafka]


def _second_start(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _assert_one_clear_line(done: subprocess.CompletedProcess[str], setting: str, port: int) -> None:
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1, done.stderr
    assert f"{setting}={port}" in lines[0]
    assert f"127.0.0.1:{port}" in lines[0] and "in use" in lines[0]


@pytest.mark.parametrize(
    ("args", "setting", "path"),
    [
        (["worker", "--model", "echo"], "KC_WORKER_METRICS_PORT", "/metrics"),
        (["serve"], "KC_PORT", "/healthz"),
    ],
    ids=["worker", "front-end"],
)
def test_a_second_process_on_a_taken_port_names_the_setting(
    settings: Settings, tmp_path: Path, args: list[str], setting: str, path: str
) -> None:
    port = process.free_port()
    env = process_env(settings, **{setting: str(port)})
    first = process.launch([*CLI, *args], env=env, log=tmp_path / "first.log")
    try:
        url = f"http://127.0.0.1:{port}{path}"
        process.wait_ready(lambda: answers(url), [first], f"the first {args[0]}", 120)
        _assert_one_clear_line(_second_start(args, env), setting, port)
        assert first.poll() is None, "the first process must keep running"
    finally:
        process.stop(first)
