"""LiteLLM's key-management routes over the key book, for admin keys (``KC_ADMIN_KEYS``) only.

``POST /key/generate``, ``/key/update``, ``/key/delete``; ``GET /key/info``, ``/key/list``.
Bodies and answers are LiteLLM's where they fit (``schemas.management``; every difference is in
docs/tenants.md). The key is in one answer only, ``/key/generate``'s; every other answer and
every error names a key by its key id. An API key gets 403, a missing or wrong key 401.
"""

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from producer.frontend.auth import Auth, Caller, admin_key
from producer.frontend.gateway import Gateway
from producer.refusals import ApiError
from schemas.api import ErrorBody, ErrorDetail
from schemas.errors import KeyConflict, KeyRefused, ModelError, UnknownKey
from schemas.keys import KeyRecord
from schemas.management import (
    DeleteKeyRequest,
    DeleteKeyResponse,
    GenerateKeyRequest,
    GenerateKeyResponse,
    KeyFields,
    KeyInfoResponse,
    KeyListResponse,
    KeyObject,
    UpdateKeyRequest,
    UpdateKeyResponse,
)
from schemas.registry import Registry


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


_ANSWERS: dict[int, dict[str, Any]] = {
    400: _error("the body is not valid UTF-8 JSON"),
    401: _error("missing or invalid key"),
    403: _error("an API key: these routes take an admin key (KC_ADMIN_KEYS)"),
    404: _error("no such managed key (or it is revoked), or a model not in the registry"),
    409: _error("the key_alias or the custom key is taken already"),
    413: _error("the body is over KC_MAX_BODY_BYTES"),
    415: _error("the body is not application/json"),
    422: _error("a field is out of range or unknown (named in error.param)"),
    503: _error("Kafka is down: the change was not written"),
}


def _answers(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: _ANSWERS[status] for status in statuses}


_POST = _answers(*_ANSWERS)
_KEY_REF = "the key's id (token), LiteLLM's token (its SHA-256), or the key itself"


def router(front: Gateway, authenticated: Auth) -> APIRouter:
    """The key-management routes over one gateway's key book (``authenticated`` is unused:
    these take admin keys)."""
    routes = APIRouter(tags=["key management"])
    administrator = admin_key(front.keys)
    book = front.keybook

    @routes.post("/key/generate", response_model=GenerateKeyResponse, responses=_POST)
    async def generate_key(
        body: GenerateKeyRequest, _: Annotated[Caller, Depends(administrator)]
    ) -> GenerateKeyResponse:
        _check_models(front.registry, body)
        if body.key is not None and front.keys.identify(f"Bearer {body.key}") is not None:
            detail = ErrorDetail(
                type="invalid_request_error",
                code="conflict",
                param="key",
                message="that key is a configured key (KC_API_KEYS or KC_ADMIN_KEYS) already",
            )
            raise ApiError(detail)
        with _refused():
            key, record = await book.generate(
                body.limits(),
                key_alias=body.key_alias,
                metadata=body.metadata,
                duration=body.duration,
                key=body.key,
            )
        return GenerateKeyResponse.of(key, record)

    @routes.post("/key/update", response_model=UpdateKeyResponse, responses=_POST)
    async def update_key(
        body: UpdateKeyRequest, _: Annotated[Caller, Depends(administrator)]
    ) -> UpdateKeyResponse:
        _check_models(front.registry, body)
        changes = body.model_dump(exclude_unset=True, exclude={"key"})
        with _refused():
            record = await book.update(book.find(body.key).key_id, changes)
        return UpdateKeyResponse.of(record)

    @routes.post("/key/delete", response_model=DeleteKeyResponse, responses=_POST)
    async def delete_key(
        body: DeleteKeyRequest, _: Annotated[Caller, Depends(administrator)]
    ) -> DeleteKeyResponse:
        with _refused():
            chosen = [book.find(ref) for ref in body.keys or ()]
            for alias in body.key_aliases or ():
                chosen += _aliased(book.with_alias(alias), alias)
            revoked = await book.revoke(r.key_id for r in chosen)
        return DeleteKeyResponse(deleted_keys=[r.key_id for r in revoked])

    @routes.get("/key/info", response_model=KeyInfoResponse, responses=_answers(401, 403, 404, 422))
    async def key_info(
        _: Annotated[Caller, Depends(administrator)],
        key: Annotated[str, Query(min_length=1, max_length=512, description=_KEY_REF)],
    ) -> KeyInfoResponse:
        with _refused():
            record = book.find(key)
        return KeyInfoResponse(key=record.key_id, info=KeyObject.of(record))

    @routes.get("/key/list", response_model=KeyListResponse, responses=_answers(401, 403, 422))
    async def list_keys(
        _: Annotated[Caller, Depends(administrator)],
        page: Annotated[int, Query(ge=1)] = 1,
        size: Annotated[int, Query(ge=1, le=100)] = 10,
        key_alias: str | None = None,
        key_hash: Annotated[str | None, Query(description="a key id or LiteLLM's token")] = None,
        return_full_object: bool = False,
        include_revoked: bool = False,
    ) -> KeyListResponse:
        records = [
            r
            for r in book.listed(revoked=include_revoked)
            if (key_alias is None or r.key_alias == key_alias)
            and (key_hash is None or key_hash in (r.key_id, r.hash))
        ]
        shown = records[(page - 1) * size : page * size]
        keys = [KeyObject.of(r) for r in shown] if return_full_object else [r.key_id for r in shown]
        return KeyListResponse(
            keys=keys,
            total_count=len(records),
            current_page=page,
            total_pages=math.ceil(len(records) / size),
        )

    return routes


def _check_models(registry: Registry, body: KeyFields) -> None:
    """Refuse (404) models the registry does not hold: a typo would lock the key out."""
    unknown: list[str] = []
    for name in dict.fromkeys(body.models or ()):
        try:
            registry.get(name)
        except ModelError:
            unknown.append(name)
    if unknown:
        detail = ErrorDetail(
            type="invalid_request_error",
            code="model_not_found",
            param="models",
            models=unknown,
            message=f"models: {', '.join(map(repr, unknown))} not in the model registry",
        )
        raise ApiError(detail)


def _aliased(records: list[KeyRecord], alias: str) -> list[KeyRecord]:
    if not records:
        raise UnknownKey(f"no managed key with key_alias {alias!r}", "key_aliases")
    return records


@contextmanager
def _refused() -> Iterator[None]:
    """Turn a KeyRefused into its answer: 404 (no such key), 409 (taken)."""
    try:
        yield
    except KeyRefused as exc:
        code = "conflict" if isinstance(exc, KeyConflict) else "not_found"
        detail = ErrorDetail(
            type="invalid_request_error", code=code, message=str(exc), param=exc.param
        )
        raise ApiError(detail) from exc
