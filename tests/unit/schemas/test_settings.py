"""Settings from KC_* variables: parsing, and start-up errors naming the variable, not secrets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from schemas.errors import ConfigError
from schemas.settings import Settings, load_settings

_SECRET = "sk-very-secret-value-1234"


def _keys(settings: Settings) -> list[str]:
    return [k.get_secret_value() for k in settings.api_keys]


def test_defaults_without_environment() -> None:
    settings = load_settings()
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.port == 8000
    assert settings.api_keys == ()
    assert settings.secret("OPENAI_API_KEY") is None


def test_api_keys_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KC_API_KEYS", "alpha,beta,gamma")
    assert _keys(load_settings()) == ["alpha", "beta", "gamma"]


def test_api_keys_blanks_and_spaces_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KC_API_KEYS", " alpha , ,beta,, ")
    settings = load_settings()
    assert _keys(settings) == ["alpha", "beta"]
    assert all(isinstance(k, SecretStr) for k in settings.api_keys)


def test_api_keys_single_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KC_API_KEYS", "only-one")
    assert _keys(load_settings()) == ["only-one"]


def test_api_keys_are_not_shown_by_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KC_API_KEYS", _SECRET)
    monkeypatch.setenv("OPENAI_API_KEY", _SECRET + "-openai")
    settings = load_settings()
    assert _SECRET not in repr(settings)
    assert _SECRET not in str(settings)


def test_env_prefix_and_types(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KC_PORT", "9123")
    monkeypatch.setenv("KC_REQUEST_TIMEOUT_S", "2.5")
    monkeypatch.setenv("KC_TOPIC_PREFIX", "t1.")
    monkeypatch.setenv("KC_REGISTRY_PATH", "/tmp/models.toml")
    settings = load_settings()
    assert settings.port == 9123
    assert settings.request_timeout_s == 2.5
    assert settings.topic_prefix == "t1."
    assert settings.registry_path == Path("/tmp/models.toml")


def test_vendor_keys_keep_their_sdk_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    monkeypatch.setenv("CO_API_KEY", "co-key")
    settings = load_settings()
    assert settings.secret("OPENAI_API_KEY") == SecretStr("sk-openai")
    assert settings.secret("CO_API_KEY") == SecretStr("co-key")
    assert settings.secret("NOT_A_KEY") is None


def test_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KC_PORT", "9123")
    assert load_settings(port=9200).port == 9200


@pytest.mark.parametrize("value", ["not-a-port", "70000", "-1", "80.5"])
def test_bad_port_names_kc_port_and_the_value(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("KC_PORT", value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "KC_PORT" in str(info.value)
    assert value in str(info.value)


def test_every_bad_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KC_PORT", "nope")
    monkeypatch.setenv("KC_LOG_LEVEL", "LOUD")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "KC_PORT" in message
    assert "nope" in message
    assert "KC_LOG_LEVEL" in message
    assert "LOUD" in message


@pytest.mark.parametrize(
    "overrides",
    [
        {"openai_api_key": [_SECRET]},
        {"co_api_key": {"key": _SECRET}},
        {"api_keys": 12345},
        {"api_keys": ["fine-key", [_SECRET]]},
        {"api_keys": ["fine-key", {"key": _SECRET}]},
    ],
    ids=["openai", "cohere", "api-keys-type", "api-keys-item-list", "api-keys-item-dict"],
)
def test_a_bad_secret_value_is_never_shown(overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(**overrides)
    message = str(info.value)
    assert _SECRET not in message
    assert "12345" not in message
    assert "<hidden>" in message
    assert "API_KEY" in message


def test_the_worker_token_budget_is_a_setting_with_a_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KC_WORKER_TOKEN_BUDGET", "4096")
    assert load_settings().worker_token_budget == 4096
    monkeypatch.setenv("KC_WORKER_TOKEN_BUDGET", "100")
    with pytest.raises(ConfigError, match="KC_WORKER_TOKEN_BUDGET='100'"):
        load_settings()


@pytest.mark.parametrize(
    "variable", ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
)
@pytest.mark.parametrize("value", ["localhost:4318", "grpc://collector:4317", "http://"])
def test_a_bad_otlp_endpoint_names_its_standard_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert f"{variable}={value!r}" in str(info.value)


def test_tracing_is_on_only_with_an_otlp_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not load_settings().tracing
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")  # set but empty: off, as for the SDK
    assert not load_settings().tracing
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:4318/v1/traces")
    assert load_settings().tracing
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318")
    assert load_settings().tracing
