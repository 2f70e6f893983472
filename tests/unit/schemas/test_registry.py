"""The model registry: the default file, why a model is not configured, bad registry files."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from schemas.errors import ConfigError, ModelError, UnknownModel
from schemas.registry import ModelSpec, Registry, load_registry
from schemas.settings import Settings

# Every model of the API specification (docs/API.md, "Models").
SPEC_MODELS = (
    "llama-2-70b-chat",
    "llama-2-70b",
    "llama-2-13b-chat",
    "llama-2-7b",
    "llama-2-7b-chat",
    "gpt-4",
    "gpt-4-0613",
    "gpt-4-0314",
    "gpt-4-32k",
    "gpt-4-32k-0613",
    "gpt-4-32k-0314",
    "gpt-3.5-turbo",
    "gpt-3.5-turbo-0613",
    "gpt-3.5-turbo-0301",
    "gpt-3.5-turbo-16k",
    "gpt-3.5-turbo-16k-0613",
    "cohere-command",
    "cohere-command-light",
    "cohere-command-nightly",
    "text-davinci-001",
)
LLAMAS = tuple(n for n in SPEC_MODELS if n.startswith("llama-"))
OPENAI = tuple(n for n in SPEC_MODELS if n.startswith(("gpt-", "text-")))
COHERE = tuple(n for n in SPEC_MODELS if n.startswith("cohere-"))


@pytest.fixture(scope="module")
def registry() -> Registry:
    """The packaged default registry."""
    return load_registry()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


def test_default_registry_lists_every_spec_model_plus_the_embedded_and_echo(
    registry: Registry,
) -> None:
    assert set(registry.names) == {*SPEC_MODELS, "smollm2-135m-instruct", "echo"}
    assert len(registry.names) == len(SPEC_MODELS) + 2
    assert [spec.name for spec in registry] == registry.names


def test_default_registry_backends(registry: Registry) -> None:
    assert {registry.get(n).backend for n in LLAMAS} == {"transformers"}
    assert {registry.get(n).backend for n in OPENAI} == {"openai"}
    assert {registry.get(n).backend for n in COHERE} == {"cohere"}
    assert registry.get("echo").backend == "echo"
    assert registry.get("smollm2-135m-instruct").backend == "transformers"
    assert registry.get("text-davinci-001").api == "completions"


def test_contains(registry: Registry) -> None:
    assert "gpt-4" in registry
    assert "gpt-5" not in registry
    assert 5 not in registry


def test_get_of_an_unknown_name(registry: Registry) -> None:
    with pytest.raises(UnknownModel) as info:
        registry.get("gpt-5")
    assert isinstance(info.value, ModelError)
    assert info.value.model == "gpt-5"
    assert "gpt-5" in str(info.value)
    assert "unknown" in info.value.reason


@pytest.mark.parametrize("name", OPENAI)
def test_openai_model_without_a_key_names_openai_api_key(registry: Registry, name: str) -> None:
    reason = registry.get(name).unavailable_reason(Settings())
    assert reason is not None
    assert "OPENAI_API_KEY" in reason
    assert name in reason


@pytest.mark.parametrize("name", OPENAI)
def test_openai_model_with_a_key_is_configured(registry: Registry, name: str) -> None:
    settings = Settings(openai_api_key=SecretStr("sk-test"))
    assert registry.get(name).unavailable_reason(settings) is None


@pytest.mark.parametrize("name", COHERE)
def test_cohere_model_needs_co_api_key(registry: Registry, name: str) -> None:
    reason = registry.get(name).unavailable_reason(Settings())
    assert reason is not None
    assert "CO_API_KEY" in reason
    assert registry.get(name).unavailable_reason(Settings(co_api_key=SecretStr("co"))) is None
    # An OpenAI key does not configure a Cohere model.
    assert registry.get(name).unavailable_reason(Settings(openai_api_key=SecretStr("sk"))) == reason


def test_openai_key_from_the_environment(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    assert registry.get("gpt-4").unavailable_reason(Settings()) is None


@pytest.mark.parametrize("name", LLAMAS)
def test_llama_models_without_a_path_are_not_configured(registry: Registry, name: str) -> None:
    reason = registry.get(name).unavailable_reason(Settings(openai_api_key=SecretStr("sk")))
    assert reason is not None
    assert reason.startswith("not configured")
    assert name in reason
    assert "path" in reason
    assert "KC_REGISTRY_PATH" in reason


def test_echo_is_always_configured(registry: Registry) -> None:
    assert registry.get("echo").unavailable_reason(Settings()) is None


def test_transformers_model_with_an_existing_directory_is_configured(tmp_path: Path) -> None:
    spec = ModelSpec(name="llama-2-7b", backend="transformers", path=str(tmp_path))
    assert spec.unavailable_reason(Settings()) is None


def test_transformers_model_with_a_missing_directory_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    spec = ModelSpec(name="llama-2-7b", backend="transformers", path=str(missing))
    reason = spec.unavailable_reason(Settings())
    assert reason is not None
    assert str(missing) in reason


def test_transformers_model_with_a_missing_gguf_package_names_it() -> None:
    spec = ModelSpec(
        name="tiny", backend="transformers", gguf_package="kc_no_such_package_xyz", gguf_file="f"
    )
    reason = spec.unavailable_reason(Settings())
    assert reason is not None
    assert "kc_no_such_package_xyz" in reason


def test_a_registry_file_replaces_the_default(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        f"""
[models."echo"]
backend = "echo"
max_concurrency = 3

[models."local-llama"]
backend = "transformers"
path = "{tmp_path}"
""",
    )
    registry = load_registry(path)
    assert registry.names == ["echo", "local-llama"]
    assert registry.get("echo").max_concurrency == 3
    assert registry.get("local-llama").unavailable_reason(Settings()) is None


@pytest.mark.parametrize(
    "text",
    [
        '[models."m"]\nbackend = "vllm"\n',
        '[models."m"]\nbackend = "echo"\nmax_concurrency = 0\n',
        '[models."m"]\nbackend = "echo"\nunknown_option = 1\n',
        '[models."m"]\n',
        '[models."m"]\nbackend = "echo"\nname = "other"\n',
        '[models."m"\nbackend = "echo"\n',
        'models = "not a table"\n',
    ],
    ids=[
        "bad-backend",
        "bad-range",
        "unknown-option",
        "no-backend",
        "name-twice",
        "not-toml",
        "models-not-a-table",
    ],
)
def test_a_bad_registry_file_raises_config_error(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_registry(path)
    assert str(path) in str(info.value)


def test_bad_backend_message_names_the_backend(tmp_path: Path) -> None:
    path = _write(tmp_path, '[models."m"]\nbackend = "vllm"\n')
    with pytest.raises(ConfigError, match="backend"):
        load_registry(path)


def test_an_unreadable_registry_path_names_kc_registry_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as info:
        load_registry(missing)
    assert "KC_REGISTRY_PATH" in str(info.value)
    assert str(missing) in str(info.value)
