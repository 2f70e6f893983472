"""Bearer-key authentication: API keys, admin keys, and a key id that is safe to share.

Three kinds of key: static API keys (``KC_API_KEYS``), managed API keys (``producer.tenants``:
created, changed and revoked through the admin routes, held on Kafka as hashes), and admin
keys (``KC_ADMIN_KEYS``: the admin routes, and every key's usage; they call no model). Static
and admin keys are compared in constant time with every configured key; a managed key is found
by its SHA-256, itself compared in constant time. Only the key id (``schemas.keys``: the first 16
hex digits of the key's SHA-256) ever leaves this module.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import Header
from pydantic import SecretStr

from producer.refusals import ApiError
from schemas.api import ErrorDetail
from schemas.keys import key_id

# A FastAPI dependency answering the caller's key id (or raising the 401).
Auth = Callable[..., Coroutine[Any, Any, str]]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who called: the key id, and whether the key is an admin key."""

    key_id: str
    admin: bool


# A FastAPI dependency answering the caller (API or admin key), or raising the 401.
CallerAuth = Callable[..., Coroutine[Any, Any, Caller]]


class ManagedKeys(Protocol):
    """The managed keys a checker also accepts (``producer.tenants.keybook.KeyBook``)."""

    def check(self, token: str) -> str | None:
        """The key id of a live managed key, or None."""


class KeyChecker:
    """Checks ``Authorization: Bearer <key>`` against the configured and managed keys."""

    def __init__(
        self,
        keys: Sequence[SecretStr],
        admin_keys: Sequence[SecretStr] = (),
        managed: ManagedKeys | None = None,
    ) -> None:
        self._keys = [k.get_secret_value().encode() for k in keys]
        self._admin_keys = [k.get_secret_value().encode() for k in admin_keys]
        self._managed = managed

    def identify(self, authorization: str | None) -> Caller | None:
        """The caller of a valid header (API or admin key), or None."""
        token = _bearer(authorization)
        if token is None:
            return None
        candidate = token.encode()
        if _one_of(candidate, self._admin_keys):
            return Caller(key_id(token), admin=True)
        if _one_of(candidate, self._keys):
            return Caller(key_id(token), admin=False)
        managed = self._managed.check(token) if self._managed is not None else None
        return Caller(managed, admin=False) if managed is not None else None

    def check(self, authorization: str | None) -> str | None:
        """The key id of a valid API key (not an admin key), or None."""
        caller = self.identify(authorization)
        return caller.key_id if caller is not None and not caller.admin else None


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _one_of(candidate: bytes, keys: list[bytes]) -> bool:
    # Compare with every key, without stopping early, so timing reveals nothing.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate, key)
    return matched


def _unauthenticated() -> ApiError:
    detail = ErrorDetail(
        type="authentication_error",
        code="invalid_api_key",
        message="missing or invalid API key: send Authorization: Bearer <key>",
    )
    return ApiError(detail, {"WWW-Authenticate": "Bearer"})


def bearer_key(keys: KeyChecker) -> Auth:
    """The dependency of every route that calls models or holds a key's files and batches:
    the API key's id, or a 401 (an admin key calls no model)."""

    async def authenticated(authorization: Annotated[str | None, Header()] = None) -> str:
        key_id = keys.check(authorization)
        if key_id is None:
            raise _unauthenticated()
        return key_id

    return authenticated


def any_key(keys: KeyChecker) -> CallerAuth:
    """The dependency of routes both kinds of key call (usage and costs): the caller, or a
    401. The route decides what an API key sees (its own) and what an admin key sees (all)."""

    async def identified(authorization: Annotated[str | None, Header()] = None) -> Caller:
        caller = keys.identify(authorization)
        if caller is None:
            raise _unauthenticated()
        return caller

    return identified


def admin_key(keys: KeyChecker) -> CallerAuth:
    """The dependency of the admin routes: an admin key's caller; 401 without a valid key,
    403 for an API key."""
    identified = any_key(keys)

    async def administrator(authorization: Annotated[str | None, Header()] = None) -> Caller:
        caller = await identified(authorization)
        if not caller.admin:
            detail = ErrorDetail(
                type="permission_error",
                code="admin_key_required",
                message="this route takes an admin key (KC_ADMIN_KEYS); an API key cannot call it",
            )
            raise ApiError(detail)
        return caller

    return administrator
