"""``kafka-completions dev`` (what ``make run`` runs): the whole service on embedded defaults.

It starts the local broker (unless ``KC_KAFKA_BOOTSTRAP`` names one), converts the embedded
model once, generates an API key when ``KC_API_KEYS`` is unset, starts the front end and a
worker for ``smollm2-135m-instruct`` (and one per vendor whose key is set) as child processes,
waits until the model answers, prints one ready line, and on Ctrl-C or SIGTERM stops every
process it started, the broker last.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from types import FrameType

from devstack import process
from devstack.broker import LocalBroker
from schemas.clients import check_broker
from schemas.errors import ConfigError
from schemas.kinds import vendor_kinds
from schemas.registry import load_registry
from schemas.settings import Settings

LOCAL_MODEL = "smollm2-135m-instruct"
_READY_TIMEOUT_S = 300.0


def run_stack(settings: Settings) -> int:
    """Run everything until interrupted; returns the exit code."""
    env = dict(os.environ)
    broker = None
    if "kafka_bootstrap" in settings.model_fields_set:
        # Once here, not once per child: an unreachable broker is one line, before anything.
        asyncio.run(check_broker(settings))
    else:
        broker = LocalBroker(data_dir=settings.cache_dir / "broker", cache_dir=settings.cache_dir)
        env["KC_KAFKA_BOOTSTRAP"] = broker.start()
        print(f"local Kafka broker on {env['KC_KAFKA_BOOTSTRAP']}", flush=True)
    key = admin = None
    if not settings.api_keys:
        key = secrets.token_urlsafe(24)
        env["KC_API_KEYS"] = key
    if not settings.admin_keys:  # the key routes and every key's usage (docs/tenants.md)
        admin = secrets.token_urlsafe(24)
        env["KC_ADMIN_KEYS"] = admin
    children: list[process.Child] = []
    stopping = _install_stop_handlers()
    try:
        _prepare_model(env)
        for models in worker_sets(settings):
            children.append(_spawn(["worker", *(a for m in models for a in ("--model", m))], env))
            env = {**env, "KC_WORKER_METRICS_PORT": "0"}
        children.append(_spawn(["serve"], env))
        _wait_ready(settings, key or settings.api_keys[0].get_secret_value(), children, stopping)
        _announce(settings, key, admin)
        while not stopping.is_set() and all(c.poll() is None for c in children):
            time.sleep(0.5)
        return 0 if stopping.is_set() else 1
    finally:
        process.stop(*children)
        if broker is not None:
            broker.stop()


def _install_stop_handlers() -> threading.Event:
    stopping = threading.Event()

    def handler(_sig: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stopping


def worker_sets(settings: Settings) -> list[list[str]]:
    """The models of each worker process: the embedded one alone, then every other configured
    local model (the registry's Llama-2 entries once their weights are set) in one process,
    and one process per vendor kind with configured models."""
    registry = load_registry(settings.registry_path)
    sets = [[LOCAL_MODEL]]
    for kind in ["transformers", *(k.name for k in vendor_kinds())]:
        specs = registry.of_kind(kind)
        names = [
            s.name
            for s in specs
            if s.name != LOCAL_MODEL and s.unavailable_reason(settings) is None
        ]
        if names:
            sets.append(names)
    return sets


def _prepare_model(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "producer.cli", "models", "prepare", LOCAL_MODEL],
        env=env,
        check=True,
    )


def _spawn(args: list[str], env: dict[str, str]) -> process.Child:
    return process.launch([sys.executable, "-m", "producer.cli", *args], env=env)


def _wait_ready(
    settings: Settings, key: str, children: list[process.Child], stopping: threading.Event
) -> None:
    url = f"http://{settings.host}:{settings.port}/v1/models"
    try:
        process.wait_ready(
            lambda: _live_workers(url, key) > 0,
            children,
            "the stack",
            _READY_TIMEOUT_S,
            cancelled=stopping.is_set,
        )
    except process.ChildExited as exc:
        raise ConfigError(
            "a process of the stack exited before it was ready; see its log above"
        ) from exc
    except TimeoutError as exc:
        raise ConfigError(f"the stack was not ready after {_READY_TIMEOUT_S:g} s") from exc


def _live_workers(url: str, key: str) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            models = json.load(response)["data"]
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return 0
    return sum(m["live_workers"] for m in models if m["id"] == LOCAL_MODEL)


def _announce(settings: Settings, generated_key: str | None, generated_admin: str | None) -> None:
    # A generated key is shown so it can be used; a key of the operator's is never printed.
    key = generated_key or "$KEY"
    origin = f"generated for this run: {key}" if generated_key else "one of KC_API_KEYS"
    if generated_admin:
        origin += f"; admin key {generated_admin}"
    body = json.dumps({"prompt": "Once upon a time", "model": [LOCAL_MODEL], "max_tokens": 32})
    print(
        f"kafka-completions ready on http://{settings.host}:{settings.port} (API key {origin}); "
        f"try: curl -s http://{settings.host}:{settings.port}/v1/completion "
        f"-H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' -d '{body}'",
        flush=True,
    )
