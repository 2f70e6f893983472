"""``/v1/batches``: create, retrieve, list (``after``, ``limit``), cancel, in OpenAI's shapes.

Statuses and counts come from the front end's batch book (``producer.jobs.batch.book``): a
retrieve is a lookup, whatever else the topics retain.
"""

from typing import Annotated, Protocol

from fastapi import APIRouter, Depends, Query

from producer.frontend.auth import Auth
from producer.frontend.routes.answers import HasBatches, answered, batch_object, page
from producer.jobs.batch.service import Pricing
from schemas.batch import BatchCreate, BatchObject, ListPage

# OpenAPI links: what a client (or a stateful fuzzer) does next with a batch it created.
_CREATED = {
    "links": {
        f"{name}Batch": {
            "operationRef": ref,
            "parameters": {"batch_id": "$response.body#/id"},
        }
        for name, ref in (
            ("Retrieve", "#/paths/~1v1~1batches~1{batch_id}/get"),
            ("Cancel", "#/paths/~1v1~1batches~1{batch_id}~1cancel/post"),
        )
    }
}


class HasAccess(HasBatches, Protocol):
    """The front end, as these routes need it: its batches, and what a key may call."""

    def check_access(self, key_id: str, models: list[str]) -> None:
        """Refuse (403) a managed key the models it may not call."""

    def price_batch(self, key_id: str) -> Pricing:
        """The key's quota for a batch: its most cost, or a refusal (429)."""


def router(front: HasAccess, authenticated: Auth) -> APIRouter:
    """The batches routes over the front end's batch service."""
    routes = APIRouter()
    service = front.batches

    @routes.post("/v1/batches", response_model=BatchObject, responses={200: _CREATED})
    async def create_batch(
        body: BatchCreate, key_id: Annotated[str, Depends(authenticated)]
    ) -> BatchObject:
        with answered():
            # A managed key makes batches of the models it may call only.
            source = service.input_file(key_id, body.input_file_id)
            front.check_access(key_id, list(source.models))
            created = await service.create(key_id, body, price=front.price_batch(key_id))
            return batch_object(service, created)

    @routes.get("/v1/batches/{batch_id}", response_model=BatchObject)
    async def retrieve_batch(
        batch_id: str, key_id: Annotated[str, Depends(authenticated)]
    ) -> BatchObject:
        with answered():
            return batch_object(service, service.batch(key_id, batch_id))

    @routes.get("/v1/batches", response_model=ListPage)
    async def list_batches(
        key_id: Annotated[str, Depends(authenticated)],
        after: str | None = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> ListPage:
        batches = service.batches_of(key_id)
        objects = [batch_object(service, b) for b in batches]
        return page(objects, [b.id for b in batches], after, limit)

    @routes.post("/v1/batches/{batch_id}/cancel", response_model=BatchObject)
    async def cancel_batch(
        batch_id: str, key_id: Annotated[str, Depends(authenticated)]
    ) -> BatchObject:
        with answered():
            return batch_object(service, await service.cancel(key_id, batch_id))

    return routes
