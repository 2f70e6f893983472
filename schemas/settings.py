"""The one settings object: built once at start-up from ``KC_*`` variables and passed down.

Vendor credentials keep the names their SDKs document (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``,
``CO_API_KEY``, ``CO_API_URL``) so an existing environment works unchanged. They are not
fields of their own: the variables are those ``schemas/kinds.toml`` names for each vendor, read
into ``vendor_keys`` and ``vendor_urls``, so a new vendor needs no edit here. A bad value fails
at start-up with ``ConfigError`` naming the variable and the value.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from schemas.errors import ConfigError
from schemas.kinds import key_variables, url_variables

ENV_PREFIX = "KC_"
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
_SECRET_FIELDS = frozenset({"api_keys", "admin_keys", "vendor_keys", "kafka_sasl_password"})
# Fields keyed by a variable's own name: an error names that variable, not KC_<FIELD>.
_BY_VARIABLE = frozenset({"vendor_keys", "vendor_urls"})


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "kafka-completions"


class Settings(BaseSettings):
    """Every setting of every process; docs/operations.md lists them with their defaults."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, populate_by_name=True
    )

    kafka_bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = ""
    request_partitions: Annotated[int, Field(ge=1, le=1024)] = 8
    results_partitions: Annotated[int, Field(ge=1, le=1024)] = 8
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None

    api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    # Keys of the admin routes (managed keys, every key's usage); they call no model.
    admin_keys: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    reply_partition: Annotated[int, Field(ge=0)] = 0
    request_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    liveness_refresh_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    max_in_flight: Annotated[int, Field(ge=1)] = 4096
    max_body_bytes: Annotated[int, Field(ge=1024)] = 1_000_000

    batch_max_lines: Annotated[int, Field(ge=1)] = 50_000
    batch_max_bytes: Annotated[int, Field(ge=1024)] = 200 * 1024 * 1024
    # What the only completion window, "24h", stands for; shorter only to test expiry.
    batch_window_s: Annotated[float, Field(gt=0, le=86400)] = 86400.0
    batch_output_expires_s: Annotated[int, Field(ge=3600, le=30 * 86400)] = 30 * 86400
    # The dispatcher's window of bulk tasks in flight per model (docs/batches.md, "Fair
    # share"): the answer rate times (a task's model time + bulk_queue_s), so a new key's
    # first line waits about bulk_queue_s behind the others.
    bulk_queue_s: Annotated[float, Field(gt=0, le=600)] = 0.25
    bulk_window_min: Annotated[int, Field(ge=1)] = 16
    bulk_window_max: Annotated[int, Field(ge=1)] = 20_000

    registry_path: Path | None = None
    cache_dir: Path = Field(default_factory=_default_cache_dir)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    worker_id: str | None = None
    worker_max_batch: Annotated[int, Field(ge=1, le=1024)] = 32
    # KV-cache slots (rows x longest row life, prompt + max_tokens) a running batch may plan
    # for; SmolLM2-135M keeps ~23 KB per slot in bf16, so 65,536 slots are ~1.5 GB.
    worker_token_budget: Annotated[int, Field(ge=256)] = 65_536
    # torch.compile the local model's decode step, once per row bucket (worker.buckets); off
    # by default: measured on two CPU cores, ten buckets took 300 s to compile and the compiled
    # step ran at 0.45x eager's tokens/s (docs/benchmarks.md, "Compiling the decode step").
    torch_compile: bool = False
    # CUDA graphs of the decode step, one per row bucket, and its tokens read back a step late
    # (worker.graphs, worker.readback); CUDA only, off until a GPU measurement turns it on.
    cuda_graphs: bool = False
    worker_metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9101
    drain_timeout_s: Annotated[float, Field(ge=0, le=600)] = 30.0
    early_replies: bool = True
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    # OpenTelemetry's own variables, under their standard names: the SDK reads them (and the
    # other OTEL_* ones) itself; here they are checked at start-up, and an endpoint set turns
    # tracing on (``tracing``). Unset, no SDK is installed at all (see schemas/tracing.py).
    otlp_endpoint: str | None = Field(None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    otlp_traces_endpoint: str | None = Field(
        None, validation_alias="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    otel_service_name: str | None = Field(None, validation_alias="OTEL_SERVICE_NAME")

    # By variable name (OPENAI_API_KEY, CO_API_URL, ...): read by _VendorCredentials.
    vendor_keys: dict[str, SecretStr] = Field(default_factory=dict)
    vendor_urls: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The usual sources, with the vendor credentials read after the KC_ variables."""
        vendors = _VendorCredentials(settings_cls)
        return init_settings, env_settings, vendors, dotenv_settings, file_secret_settings

    @model_validator(mode="before")
    @classmethod
    def _credentials_by_name(cls, data: Any) -> Any:
        # Settings(openai_api_key=..., co_api_url=...): a credential passed by its variable's
        # name in lower case, as the fields of one were once called.
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for field, names in (("vendor_keys", key_variables()), ("vendor_urls", url_variables())):
            given = {n: data.pop(n.lower()) for n in names if n.lower() in data}
            if given:
                data[field] = {**data.get(field, {}), **given}
        return data

    @field_validator("api_keys", "admin_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        # Comma-separated in the environment; blanks between commas are ignored.
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("otlp_endpoint", "otlp_traces_endpoint", mode="after")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        # The OTLP/HTTP exporter would only fail at its first export, on a thread, later.
        if not value:
            return None
        url = urlsplit(value)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError("an OTLP/HTTP endpoint is an http:// or https:// URL with a host")
        return value

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL_") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"KC_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "KC_KAFKA_SASL_USERNAME and KC_KAFKA_SASL_PASSWORD"
            )
        return self

    @property
    def tracing(self) -> bool:
        """Whether spans are exported (an OTLP endpoint is set)."""
        return bool(self.otlp_endpoint or self.otlp_traces_endpoint)

    def secret(self, env_name: str) -> SecretStr | None:
        """A vendor's API key by the variable name the registry gives."""
        return self.vendor_keys.get(env_name)

    def vendor_url(self, env_name: str | None) -> str | None:
        """A vendor's base URL by its variable name (None: not set)."""
        return self.vendor_urls.get(env_name) if env_name else None


class _VendorCredentials(PydanticBaseSettingsSource):
    """The variables ``kinds.toml`` names for each vendor: the SDK's name, else ``KC_`` + it."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: every value comes from ``__call__``."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for field, names in (("vendor_keys", key_variables()), ("vendor_urls", url_variables())):
            values = {n: _variable(n) for n in names}
            present = {n: v for n, v in values.items() if v is not None}
            if present:
                found[field] = present
        return found


def _variable(name: str) -> str | None:
    # The SDK's own name wins, as it did when these were aliased fields.
    return os.environ.get(name, os.environ.get(ENV_PREFIX + name))


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment (and overrides), or raise ConfigError."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            if not err["loc"]:  # a check across fields: its message names the variables
                problems.append(err["msg"].removeprefix("Value error, "))
                continue
            field = ".".join(str(p) for p in err["loc"])
            head = str(err["loc"][0]).lower()
            if head in _BY_VARIABLE and len(err["loc"]) > 1:
                variable = str(err["loc"][1])
            elif field.isupper():  # read under its own name (OTEL_*), not KC_<FIELD>
                variable = field
            else:
                variable = f"{ENV_PREFIX}{field.upper()}"
            secret = head in _SECRET_FIELDS
            shown = "<hidden>" if secret else repr(err.get("input"))
            problems.append(f"{variable}={shown}: {err['msg']}")
        raise ConfigError("bad setting: " + "; ".join(problems)) from exc
