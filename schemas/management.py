"""HTTP bodies of the key-management routes, in LiteLLM's shapes and field names.

``POST /key/generate``, ``/key/update``, ``/key/delete``, ``GET /key/info`` and ``/key/list``
take and answer what LiteLLM's proxy does where the fields fit, so its scripts keep working;
docs/tenants.md lists every difference. No body ever holds a key but the one answer to
``/key/generate``: elsewhere a key is named by its key id (``token``).

Every constraint is in the JSON schema (durations, custom keys, sizes), so a body the published
schema accepts is never refused with a 422 by a check made later.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StrictFloat,
    StrictInt,
    StringConstraints,
)

from schemas.api import ModelName, integral
from schemas.keys import KeyLimits, KeyRecord

MAX_METADATA_BYTES = 16 * 1024
MAX_MODELS_PER_KEY = 256
# LiteLLM's durations (30s, 10m, 2h, 30d, 1w, 1mo), bounded: at most six digits.
DURATION_PATTERN = r"^[1-9][0-9]{0,5}(s|m|h|d|w|mo)$"
# A custom key: ``sk-`` and 17 to 253 printable ASCII characters, no space (a bearer token).
CUSTOM_KEY_PATTERN = r"^sk-[!-~]{17,253}$"
# The last instant a datetime holds: an expiry past it (a 999999mo key) shows as that.
_LAST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()


def _small(metadata: dict[str, JsonValue] | None) -> dict[str, JsonValue] | None:
    # A record travels as one Kafka message; metadata is for labels, not documents.
    size = len(json.dumps(metadata, separators=(",", ":")).encode()) if metadata else 0
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"{size} bytes as JSON; at most {MAX_METADATA_BYTES}")
    return metadata


Duration = Annotated[str, Field(pattern=DURATION_PATTERN, examples=["30d"])]
Alias = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Limit = Annotated[StrictInt, Field(ge=0), BeforeValidator(integral)]
Budget = Annotated[StrictFloat, Field(ge=0, allow_inf_nan=False)]
Metadata = Annotated[dict[str, JsonValue], AfterValidator(_small)]
# A key, its key id, or LiteLLM's token (the key's SHA-256): what names a key in a request.
KeyRef = Annotated[str, StringConstraints(min_length=1, max_length=512)]


class KeyFields(BaseModel):
    """What a managed key carries besides the key: LiteLLM's names, all optional."""

    model_config = ConfigDict(extra="forbid")

    key_alias: Alias | None = None
    models: Annotated[list[ModelName], Field(max_length=MAX_MODELS_PER_KEY)] | None = None
    rpm_limit: Limit | None = None
    tpm_limit: Limit | None = None
    max_budget: Budget | None = None
    budget_duration: Duration | None = None
    duration: Duration | None = None  # how long the key lives from now; None: for ever
    metadata: Metadata | None = None

    def limits(self) -> KeyLimits:
        """What the key may do, as its record keeps it (no ``models``: every model)."""
        return KeyLimits(
            models=tuple(self.models or ()),
            rpm_limit=self.rpm_limit,
            tpm_limit=self.tpm_limit,
            max_budget=self.max_budget,
            budget_duration=self.budget_duration,
        )


class GenerateKeyRequest(KeyFields):
    """The body of ``POST /key/generate``; ``key`` sets a custom key (a migrated one)."""

    key: Annotated[str, Field(pattern=CUSTOM_KEY_PATTERN)] | None = None


class UpdateKeyRequest(KeyFields):
    """The body of ``POST /key/update``: the key (or its key id) and the fields that change.

    A field left out keeps its value; ``null`` clears it (no limit, every model, no expiry).
    """

    key: KeyRef


class DeleteKeyRequest(BaseModel):
    """The body of ``POST /key/delete``: keys (or key ids), aliases, or both."""

    model_config = ConfigDict(extra="forbid")

    keys: Annotated[list[KeyRef], Field(max_length=1000)] | None = None
    key_aliases: Annotated[list[Alias], Field(max_length=1000)] | None = None


def _when(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(min(epoch_s, _LAST), UTC)


class KeyView(BaseModel):
    """A managed key as the routes show it, without naming it."""

    key_name: str  # the prefix and last 4 characters, as LiteLLM shows a key
    key_alias: str | None
    models: list[str]  # empty: every model
    rpm_limit: int | None
    tpm_limit: int | None
    max_budget: float | None
    budget_duration: str | None
    metadata: dict[str, JsonValue]
    expires: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def fields_of(cls, record: KeyRecord) -> dict[str, object]:
        """The shown fields of a record, times as datetimes."""
        return {
            "key_name": record.key_name,
            "key_alias": record.key_alias,
            "models": list(record.models),
            "rpm_limit": record.rpm_limit,
            "tpm_limit": record.tpm_limit,
            "max_budget": record.max_budget,
            "budget_duration": record.budget_duration,
            "metadata": record.metadata,
            "expires": _when(record.expires) if record.expires is not None else None,
            "created_at": _when(record.created_at),
            "updated_at": _when(record.updated_at),
        }


class KeyObject(KeyView):
    """A managed key in ``/key/info`` and ``/key/list``: ``token`` is its key id."""

    token: str
    revoked_at: datetime | None = None

    @classmethod
    def of(cls, record: KeyRecord) -> KeyObject:
        """The object of a record."""
        revoked = _when(record.revoked_at) if record.revoked_at is not None else None
        return cls.model_validate(
            cls.fields_of(record) | {"token": record.key_id, "revoked_at": revoked}
        )


class GenerateKeyResponse(KeyView):
    """The answer to ``POST /key/generate``: the one time the key itself is shown."""

    key: str
    token_id: str  # the key id: what names the key from now on

    @classmethod
    def of(cls, key: str, record: KeyRecord) -> GenerateKeyResponse:
        """The answer for a key just made."""
        return cls.model_validate(cls.fields_of(record) | {"key": key, "token_id": record.key_id})


class UpdateKeyResponse(KeyObject):
    """The answer to ``POST /key/update``: the key as it is now; ``key`` is its key id."""

    key: str

    @classmethod
    def of(cls, record: KeyRecord) -> UpdateKeyResponse:
        """The answer for a key just changed."""
        shown = KeyObject.of(record).model_dump()
        return cls.model_validate(shown | {"key": record.key_id})


class KeyInfoResponse(BaseModel):
    """The answer to ``GET /key/info``: ``key`` is the key id, never the key."""

    key: str
    info: KeyObject


class KeyListResponse(BaseModel):
    """The answer to ``GET /key/list``: key ids, or whole objects (``return_full_object``)."""

    keys: list[str] | list[KeyObject]
    total_count: int
    current_page: int
    total_pages: int


class DeleteKeyResponse(BaseModel):
    """The answer to ``POST /key/delete``: the key id of every key revoked."""

    deleted_keys: list[str]
