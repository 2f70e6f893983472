"""API keys: the key id (the one form of a key that leaves the front end) and the managed key's
record.

A key id is the first 16 hex digits of the key's SHA-256; it goes on Kafka with each task and
result, in batch records, logs and metrics, so usage can be attributed without the key
travelling. The front end's key checker and the job CLI compute it alike, so a batch submitted
with the CLI belongs to the key that sees it over HTTP.

A managed key (``KeyRecord``) lives on the compacted keys topic, keyed by its key id: its
SHA-256 (``hash``), never the key, with its alias, allowed models, limits and metadata. The
field names are LiteLLM's (``key_alias``, ``models``, ``rpm_limit``, ``tpm_limit``,
``max_budget``, ``budget_duration``, ``metadata``) so scripts written for its proxy keep working.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

KEY_PREFIX = "sk-kc-"
_DURATION = re.compile(r"^(\d+)(s|m|h|d|w|mo)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "mo": 30 * 86400}


def key_id(key: str) -> str:
    """A stable, non-reversible identifier of an API key."""
    return key_hash(key)[:16]


def key_hash(key: str) -> str:
    """The SHA-256 of a key (hex): all that is stored of a managed key."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh managed key: ``sk-kc-`` and 256 random bits (shown once, at creation)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def shown_name(key: str) -> str:
    """The key as lists show it (LiteLLM's ``key_name``): the prefix and the last 4 characters."""
    # A custom key (LiteLLM's ``key`` on generate) keeps its own ``sk-``, not ours.
    prefix = KEY_PREFIX if key.startswith(KEY_PREFIX) else "sk-"
    return f"{prefix}...{key[-4:]}"


def duration_s(text: str) -> int:
    """Seconds of a LiteLLM duration (``30s``, ``10m``, ``2h``, ``30d``, ``1w``, ``1mo``).

    A month is 30 days. Raises ValueError naming the value otherwise.
    """
    match = _DURATION.match(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(
            f"{text!r} is not a duration: a positive number and one of s, m, h, d, w, mo "
            "(30s, 10m, 2h, 30d, 1w, 1mo)"
        )
    return int(match.group(1)) * _UNIT_S[match.group(2)]


Duration = Annotated[str, Field(pattern=_DURATION.pattern)]


class KeyLimits(BaseModel):
    """What a managed key may do: models (empty: every model) and its limits (None: none)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    models: tuple[str, ...] = ()
    rpm_limit: Annotated[int, Field(ge=0)] | None = None
    tpm_limit: Annotated[int, Field(ge=0)] | None = None
    max_budget: Annotated[float, Field(ge=0)] | None = None
    budget_duration: Duration | None = None


class KeyRecord(KeyLimits):
    """A managed key as the keys topic holds it (keyed by ``key_id``); never the key itself."""

    v: Literal[1] = 1
    key_id: str
    hash: str  # SHA-256 of the key, hex
    key_name: str  # the key's prefix and last 4 characters, as lists show it
    key_alias: str | None = None
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    created_at: float
    updated_at: float
    expires: float | None = None  # epoch seconds; None: never
    revoked_at: float | None = None

    def live(self, now: float) -> bool:
        """Whether the key is accepted now (not revoked, not expired)."""
        return self.revoked_at is None and (self.expires is None or now < self.expires)

    def allows(self, model: str) -> bool:
        """Whether the key may call ``model`` (an empty ``models`` allows every model)."""
        return not self.models or model in self.models

    def budget_window(self, now: float) -> tuple[float, float] | None:
        """The budget period ``now`` falls in, ``[start, end)``: periods of ``budget_duration``
        counted from the minute of the key's creation, in whole minutes (the usage ledger
        counts by the minute); None without a ``max_budget``. Without a ``budget_duration``
        the period is the key's whole life."""
        if self.max_budget is None:
            return None
        if self.budget_duration is None:
            return (0.0, float("inf"))
        span = -(-duration_s(self.budget_duration) // 60) * 60
        first = self.created_at - self.created_at % 60
        start = first + ((now - first) // span) * span
        return (start, start + span)
