"""The deployment files: compose.yaml is valid and complete, Prometheus scrapes every process."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml
from devstack import deploy

from schemas.registry import load_registry

ROOT = Path(__file__).parents[2]


def _load(name: str) -> Any:
    return yaml.safe_load((ROOT / name).read_text())


def test_compose_has_the_whole_stack() -> None:
    services = _load("compose.yaml")["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert {
        "frontend",
        "worker-local",
        "worker-openai",
        "worker-cohere",
        "prometheus",
        "grafana",
    } <= set(services)
    devices = services["worker-local"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert services["worker-openai"]["environment"]["OPENAI_API_KEY"] == "${OPENAI_API_KEY:-}"
    grafana = " ".join(services["grafana"]["volumes"])
    assert "deploy/grafana/dashboards" in grafana and "deploy/grafana/provisioning" in grafana


def test_prometheus_scrapes_every_kafka_completions_process() -> None:
    services = _load("compose.yaml")["services"]
    ours = {name for name, svc in services.items() if svc.get("build") == "."}
    jobs = _load("deploy/prometheus.yml")["scrape_configs"]
    scraped = {t.split(":")[0] for job in jobs for c in job["static_configs"] for t in c["targets"]}
    assert ours == scraped


def test_the_derived_deploy_files_are_what_devstack_deploy_writes() -> None:
    for path, text in deploy.derived_files().items():
        assert path.read_text() == text, f"{path} drifted: run python -m devstack.deploy"
    assert deploy.main(["--check"]) == 0


def test_a_hand_edit_of_a_derived_file_is_drift(tmp_path: Path) -> None:
    edited = deploy.COMPOSE.read_text().replace('"--model", "gpt-4-0613",\n', "")
    assert edited != deploy.COMPOSE.read_text()
    assert deploy.compose_text(edited, load_registry()) == deploy.COMPOSE.read_text()


def _compose_clients() -> list[list[str]]:
    """Every Compose client here: v1 (`docker-compose`, which the test set-up installs), v2."""
    clients = [["docker-compose"]] if shutil.which("docker-compose") else []
    if shutil.which("docker") is not None:
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            clients.append(["docker", "compose"])
    assert clients, "no Compose client: scripts/install-tools.sh installs docker-compose"
    return clients


def _compose_config(client: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # No engine is needed: `config` only parses, interpolates and validates the file.
    return subprocess.run(
        [*client, "-f", str(ROOT / "compose.yaml"), "config", "-q"],
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", **env},
        capture_output=True,
        text=True,
        check=False,
    )


def test_docker_compose_accepts_the_file() -> None:
    for client in _compose_clients():
        done = _compose_config(client, {"KC_API_KEYS": "k"})
        assert done.returncode == 0, f"{' '.join(client)}: {done.stderr}"


def test_docker_compose_refuses_to_start_without_api_keys() -> None:
    for client in _compose_clients():
        done = _compose_config(client, {})
        assert done.returncode != 0
        assert "set KC_API_KEYS" in done.stderr
