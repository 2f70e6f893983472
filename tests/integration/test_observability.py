"""Metrics and logs as an operator sees them: the dashboard's queries, the request id trail."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest
from devstack.process import free_port
from prometheus_client.parser import text_string_to_metric_families

from schemas.settings import Settings
from tests.integration.harness import front_end, spec_body, wait_live, worker_process

pytestmark = [pytest.mark.kafka]
DASHBOARD = Path(__file__).parents[2] / "deploy/grafana/dashboards/kafka-completions.json"
_SUFFIXES = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}


def exported_names(exposition: str) -> set[str]:
    """Every sample name a Prometheus scrape of this text can return, labels or not yet."""
    names = set()
    for family in text_string_to_metric_families(exposition):
        for suffix in _SUFFIXES.get(family.type, [""]):
            names.add(family.name + suffix)
    return names


def dashboard_metric_names() -> set[str]:
    """The kc_ metric names of every query of every panel."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    assert len(exprs) >= 12
    return {m for e in exprs for m in re.findall(r"\bkc_[a-z0-9_]+", e)}


async def test_dashboard_queries_and_request_id_trail(settings: Settings, tmp_path: Path) -> None:
    metrics_port = free_port()
    log_file = tmp_path / "worker.log"
    extra = {"KC_WORKER_METRICS_PORT": str(metrics_port), "KC_LOG_FORMAT": "json"}
    with log_file.open("w") as sink:
        proc = worker_process(settings, "echo", env=extra, stderr=sink)
    try:
        async with front_end(settings) as client:
            await wait_live(client, "echo")
            response = await client.post("/v1/completion", json=spec_body(model=["echo", "echo"]))
            assert response.status_code == 200
            front_text = (await client.get("/metrics")).text
            await asyncio.sleep(0.5)
            worker_text = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    finally:
        proc.terminate()
        proc.wait(30)
    missing = dashboard_metric_names() - exported_names(front_text) - exported_names(worker_text)
    assert not missing, f"dashboard queries metrics nobody exports: {sorted(missing)}"
    assert 'kc_worker_tasks_total{model="echo",outcome="done"} 2.0' in worker_text
    request_id = response.json()["id"]
    lines = [json.loads(line) for line in log_file.read_text().splitlines() if line.startswith("{")]
    trail = [line for line in lines if line.get("request_id") == request_id]
    assert {line["choice_index"] for line in trail} == {0, 1}
    assert all(line["outcome"] == "done" and line["model"] == "echo" for line in trail)


def test_worker_logs_are_json_lines_when_asked(settings: Settings, tmp_path: Path) -> None:
    log_file = tmp_path / "worker.log"
    with log_file.open("w") as sink:
        proc = worker_process(settings, "echo", env={"KC_LOG_FORMAT": "json"}, stderr=sink)
    try:
        deadline = time.monotonic() + 60
        while "serving echo" not in log_file.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(30)
    lines = [line for line in log_file.read_text().splitlines() if line.strip()]
    assert lines, "the worker logged nothing"
    parsed = [json.loads(line) for line in lines]
    assert any(
        p["message"].startswith("worker ") and "serving echo" in p["message"] for p in parsed
    )
    assert all({"ts", "level", "logger", "message"} <= p.keys() for p in parsed)
    assert proc.returncode == 0, "SIGTERM should end the worker cleanly"
