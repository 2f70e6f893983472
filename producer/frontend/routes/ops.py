"""Operations routes: ``/healthz``, ``/readyz``, ``/metrics`` and ``GET /v1/models``."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from producer.frontend.auth import Auth
from producer.frontend.gateway import Gateway


def router(front: Gateway, authenticated: Auth) -> APIRouter:
    """The router of the health, readiness, metrics and model-list routes over one gateway."""
    routes = APIRouter()

    @routes.get("/v1/models")
    async def list_models(key_id: Annotated[str, Depends(authenticated)]) -> dict[str, Any]:
        # A managed key sees the models it may call (OpenAI lists a key's models alike).
        record = front.keybook.get(key_id)
        data = []
        for spec in front.registry:
            if record is not None and not record.allows(spec.name):
                continue
            reason = spec.unavailable_reason(front.settings)
            data.append(
                {
                    "id": spec.name,
                    "object": "model",
                    "created": front.started,
                    "owned_by": spec.backend,
                    "backend": spec.backend,
                    "configured": reason is None,
                    "reason": reason,
                    "live_workers": front.liveness.members(spec.name),
                }
            )
        return {"object": "list", "data": data}

    @routes.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @routes.get("/readyz")
    async def readyz() -> JSONResponse:
        ready = front.ready
        body = {"ready": ready, "reply_partition": front.replies.partition}
        return JSONResponse(body, status_code=200 if ready else 503)

    @routes.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(front.metrics_registry), media_type=CONTENT_TYPE_LATEST)

    return routes
