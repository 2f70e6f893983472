"""Bearer-key authentication: constant-time comparison, and a key id that is safe to share.

Only the key id (``schemas.keys``: the first 16 hex digits of the key's SHA-256) ever leaves
this module: it goes on Kafka with each task so usage can be attributed without the key
travelling.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine, Sequence
from typing import Annotated, Any

from fastapi import Header
from pydantic import SecretStr

from producer.refusals import ApiError
from schemas.api import ErrorDetail
from schemas.keys import key_id

# A FastAPI dependency answering the caller's key id (or raising the 401).
Auth = Callable[..., Coroutine[Any, Any, str]]


class KeyChecker:
    """Checks ``Authorization: Bearer <key>`` against the configured keys."""

    def __init__(self, keys: Sequence[SecretStr]) -> None:
        self._keys = [k.get_secret_value().encode() for k in keys]

    def check(self, authorization: str | None) -> str | None:
        """The key id of a valid header, or None."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        candidate = token.strip().encode()
        # Compare with every key, without stopping early, so timing reveals nothing.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        return key_id(candidate.decode()) if matched else None


def bearer_key(keys: KeyChecker) -> Auth:
    """The dependency every authenticated route declares: the key id, or a 401."""

    async def authenticated(authorization: Annotated[str | None, Header()] = None) -> str:
        key_id = keys.check(authorization)
        if key_id is None:
            detail = ErrorDetail(
                type="authentication_error",
                code="invalid_api_key",
                message="missing or invalid API key: send Authorization: Bearer <key>",
            )
            raise ApiError(detail, {"WWW-Authenticate": "Bearer"})
        return key_id

    return authenticated
