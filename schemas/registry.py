"""The model registry: public model names mapped to a backend and its options (TOML).

The default registry (``models.toml`` beside this module) lists every model docs/API.md names,
the embedded ``smollm2-135m-instruct`` and the load-testing ``echo`` model. ``KC_REGISTRY_PATH``
replaces it with a file of the same shape. A model whose weights or key are missing stays
listed and is reported as not configured, with the reason.
"""

from __future__ import annotations

import importlib.util
import tomllib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from schemas.errors import ConfigError, UnknownModel
from schemas.settings import Settings

# The kind of backend serving a model (``worker.backend.Backend`` is the serving protocol).
BackendKind = Literal["transformers", "openai", "cohere", "echo"]
# Request fields whose accepted range a model may narrow (its vendor cannot map the rest).
RangedParam = Literal["temperature", "top_p", "presence_penalty", "frequency_penalty"]


class ModelSpec(BaseModel):
    """One public model: which backend serves it and how."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    backend: BackendKind
    # transformers: a local checkpoint directory, or a GGUF file shipped in a Python package.
    path: str | None = None
    gguf_package: str | None = None
    gguf_file: str | None = None
    chat_template: bool = True
    # vendors
    vendor_model: str | None = None
    api: Literal["chat", "completions"] = "chat"
    api_key_env: str | None = None
    base_url: str | None = None
    max_concurrency: Annotated[int, Field(ge=1, le=1024)] = 8
    max_stop_sequences: Annotated[int, Field(ge=0, le=64)] = 16
    timeout_s: Annotated[float, Field(gt=0)] = 60.0
    max_retries: Annotated[int, Field(ge=0, le=10)] = 3
    retry_budget_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    # The values of a request field this model can serve; the front end refuses the rest.
    accepted_ranges: dict[RangedParam, tuple[float, float]] = Field(default_factory=dict)

    @field_validator("accepted_ranges")
    @classmethod
    def _ordered(
        cls, ranges: dict[RangedParam, tuple[float, float]]
    ) -> dict[RangedParam, tuple[float, float]]:
        for param, (low, high) in ranges.items():
            if low > high:
                raise ValueError(f"accepted_ranges.{param}: {low} is above {high}")
        return ranges

    def unavailable_reason(self, settings: Settings) -> str | None:
        """Why this model cannot run with these settings, or None when it is configured."""
        if self.backend == "echo":
            return None
        if self.backend == "transformers":
            return self._weights_reason()
        env = self.api_key_env
        if env is None:
            return f"not configured: the registry entry of {self.name} names no api_key_env"
        if settings.secret(env) is None:
            return f"not configured: set {env} to use {self.name}"
        return None

    def _weights_reason(self) -> str | None:
        if self.path:
            if Path(self.path).expanduser().is_dir():
                return None
            return f"not configured: weights directory {self.path} does not exist"
        if self.gguf_package:
            if importlib.util.find_spec(self.gguf_package) is not None:
                return None
            return f"not configured: install the package {self.gguf_package} for its weights"
        return (
            f"not configured: no local weights for {self.name}; set `path` for it in a "
            "registry file named by KC_REGISTRY_PATH"
        )


class Registry:
    """Every known model by public name."""

    def __init__(self, specs: list[ModelSpec]) -> None:
        self._specs = {spec.name: spec for spec in specs}

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._specs.values())

    def get(self, name: str) -> ModelSpec:
        """The spec of a model, or UnknownModel."""
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownModel(name, "unknown model; GET /v1/models lists the known ones") from None

    @property
    def names(self) -> list[str]:
        """Every public model name, in file order."""
        return list(self._specs)


def load_registry(path: Path | None = None) -> Registry:
    """Read a registry file (the packaged default when None), or raise ConfigError."""
    if path is None:
        text = resources.files("schemas").joinpath("models.toml").read_text()
        where = "the default registry"
    else:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"KC_REGISTRY_PATH={path}: cannot read it ({exc})") from exc
        where = str(path)
    try:
        table = tomllib.loads(text).get("models", {})
        if not isinstance(table, dict):
            raise ConfigError(f'{where}: `models` must be a table of [models."NAME"] entries')
        return Registry([ModelSpec(name=name, **opts) for name, opts in table.items()])
    except (tomllib.TOMLDecodeError, ValidationError, TypeError) as exc:
        raise ConfigError(f"{where} is not a valid model registry: {exc}") from exc
