"""A new vendor is its module and its registry entries: everything else is derived from them.

Each test adds a kind ``acme`` the way a new vendor would (a table in kinds.toml, models in a
registry file, a module that registers its factory) and checks that the settings, the
registry, ``make run``'s worker sets and the deploy files pick it up with no other edit.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from devstack import deploy
from devstack.stack import worker_sets
from pydantic import SecretStr

from schemas import kinds
from schemas.errors import ConfigError
from schemas.kinds import backend_kinds
from schemas.metrics import WorkerMetrics
from schemas.registry import ModelSpec, load_registry
from schemas.settings import Settings, load_settings
from worker import backend
from worker.backend import Backend, backend_factory, backend_kind, create_backend
from worker.backends.echo import EchoBackend

ACME = '\n[kinds.acme]\napi_key_env = "ACME_API_KEY"\nbase_url_env = "ACME_BASE_URL"\n'
MODELS = '[models."acme-1"]\nbackend = "acme"\n[models."acme-2"]\nbackend = "acme"\n'


@pytest.fixture
def acme(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The kinds with ``acme`` added, as its table in kinds.toml would."""
    text = kinds._kinds_text() + ACME
    monkeypatch.setattr(kinds, "_kinds_text", lambda: text)
    backend_kinds.cache_clear()
    yield
    backend_kinds.cache_clear()


@pytest.fixture
def registry_file(tmp_path: Path) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(MODELS)
    return path


@pytest.mark.usefixtures("acme")
def test_the_settings_read_a_new_vendors_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_API_KEY", "acme-secret")
    monkeypatch.setenv("KC_ACME_BASE_URL", "http://127.0.0.1:1/v1")
    settings = load_settings()
    assert settings.secret("ACME_API_KEY") == SecretStr("acme-secret")
    assert settings.vendor_url("ACME_BASE_URL") == "http://127.0.0.1:1/v1"
    assert "acme-secret" not in repr(settings)
    assert Settings(acme_api_key="k").secret("ACME_API_KEY") == SecretStr("k")


def test_an_unknown_vendors_variables_are_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_API_KEY", "acme-secret")
    assert load_settings().secret("ACME_API_KEY") is None


@pytest.mark.usefixtures("acme")
def test_a_new_vendors_models_take_their_kinds_variables(registry_file: Path) -> None:
    spec = load_registry(registry_file).get("acme-1")
    assert (spec.api_key_env, spec.base_url_env) == ("ACME_API_KEY", "ACME_BASE_URL")
    reason = spec.unavailable_reason(Settings())
    assert reason is not None and "ACME_API_KEY" in reason
    assert spec.unavailable_reason(Settings(acme_api_key="k")) is None


def test_a_model_of_an_undeclared_kind_is_refused(registry_file: Path) -> None:
    with pytest.raises(ConfigError, match="'acme' is not one of"):
        load_registry(registry_file)


@pytest.mark.usefixtures("acme")
def test_make_run_starts_a_worker_for_a_new_vendor_once_configured(registry_file: Path) -> None:
    settings = Settings(registry_path=registry_file)
    assert worker_sets(settings) == [["smollm2-135m-instruct"]]
    keyed = Settings(registry_path=registry_file, acme_api_key="k")
    assert worker_sets(keyed) == [["smollm2-135m-instruct"], ["acme-1", "acme-2"]]


@pytest.mark.usefixtures("acme")
def test_the_deploy_files_get_a_service_and_a_target_for_a_new_vendor(
    registry_file: Path,
) -> None:
    registry = load_registry(registry_file)
    service = deploy.vendor_services(registry)["worker-acme"]
    assert "ACME_API_KEY: ${ACME_API_KEY:-}" in service
    assert "ACME_BASE_URL: ${ACME_BASE_URL:-}" in service
    assert '"--model", "acme-2"' in service and 'profiles: ["acme"]' in service
    assert '"worker-acme:9101"' in deploy.prometheus_text(registry)


@pytest.mark.usefixtures("acme")
async def test_create_backend_finds_a_registered_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend, "_FACTORIES", {})
    spec = ModelSpec(name="acme-1", backend="acme")
    with pytest.raises(ConfigError, match="the acme backend is not available"):
        await create_backend(spec, Settings())

    @backend_kind("acme")
    async def build(s: ModelSpec, _settings: Settings, _m: WorkerMetrics | None) -> Backend:
        return EchoBackend(s)

    assert isinstance(await create_backend(spec, Settings()), EchoBackend)


@pytest.mark.parametrize("kind", list(backend_kinds()))
def test_every_declared_kind_has_a_module_that_registers_it(kind: str) -> None:
    assert callable(backend_factory(ModelSpec(name="m", backend=kind)))
