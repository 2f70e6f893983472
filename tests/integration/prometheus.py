"""A real Prometheus for a test: Debian's binary on a free port, scraping the test's processes.

The scrape configuration is ``deploy/prometheus.yml`` with each job's targets rewritten to the
port the test's process of that role listens on (jobs with no such process are dropped) and a
one-second interval, so a few seconds of traffic are enough samples for ``rate()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import yaml
from devstack.process import free_port

DEPLOYED = Path(__file__).parents[2] / "deploy/prometheus.yml"
SCRAPE_INTERVAL_S = 1.0


def scrape_config(ports: dict[str, int]) -> dict[str, Any]:
    """``deploy/prometheus.yml`` pointed at 127.0.0.1: ``ports`` maps a job name to a port."""
    config: dict[str, Any] = yaml.safe_load(DEPLOYED.read_text())
    interval = f"{SCRAPE_INTERVAL_S:g}s"
    config["global"] |= {"scrape_interval": interval, "evaluation_interval": interval}
    unknown = set(ports) - {job["job_name"] for job in config["scrape_configs"]}
    assert not unknown, f"deploy/prometheus.yml has no job {sorted(unknown)}"
    jobs = [job for job in config["scrape_configs"] if job["job_name"] in ports]
    for job in jobs:
        job["static_configs"] = [{"targets": [f"127.0.0.1:{ports[job['job_name']]}"]}]
    config["scrape_configs"] = jobs
    return config


class Prometheus:
    """The HTTP API of a running Prometheus (async: the test's loop serves the front end)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of ``expr`` now: each element's ``metric`` labels and value."""
        answer = (await self._client.get("/api/v1/query", params={"query": expr})).json()
        assert answer["status"] == "success", (expr, answer)
        assert answer["data"]["resultType"] == "vector", (expr, answer)
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    async def values(self, expr: str, label: str) -> dict[str, float]:
        """``expr`` now, each value keyed by one label."""
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in await self.query(expr)}

    async def wait_for(self, expr: str, expected: float, timeout_s: float = 30) -> None:
        """Wait until the scalar sum of ``expr`` equals ``expected`` (all scrapes caught up)."""
        deadline = time.monotonic() + timeout_s
        seen: float | None = None
        while time.monotonic() < deadline:
            seen = sum(float(r["value"][1]) for r in await self.query(expr))
            if seen == expected:
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"{expr} is {seen} in Prometheus, expected {expected}")

    async def targets_up(self) -> dict[str, bool]:
        """Each scrape job: whether its last scrape succeeded."""
        return {r["metric"]["job"]: r["value"][1] == "1" for r in await self.query("up")}


@contextlib.asynccontextmanager
async def prometheus(ports: dict[str, int], workdir: Path) -> AsyncIterator[Prometheus]:
    """Prometheus scraping ``ports`` (job name -> port on 127.0.0.1) until the block ends."""
    port = free_port()
    process, log = _spawn(scrape_config(ports), workdir, port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            await _wait_ready(client, process, log)
            yield Prometheus(client)
    finally:
        process.terminate()
        process.wait(30)


def _spawn(
    config: dict[str, Any], workdir: Path, port: int
) -> tuple[subprocess.Popen[bytes], Path]:
    binary = shutil.which("prometheus")
    assert binary, "no prometheus binary: scripts/install-tools.sh installs Debian's package"
    config_file = workdir / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    log = workdir / "prometheus.log"
    with log.open("w") as sink:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return process, log


def _tail(log: Path) -> str:
    return log.read_text()[-2000:]


async def _wait_ready(
    client: httpx.AsyncClient, process: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, f"prometheus exited: {_tail(log)}"
        with contextlib.suppress(httpx.HTTPError):
            if (await client.get("/-/ready")).status_code == 200:
                return
        await asyncio.sleep(0.2)
    raise AssertionError(f"prometheus not ready after 60 s: {_tail(log)}")
