"""``POST /v1/completion``: the service's own completion route (one choice per model)."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from producer.frontend.auth import Auth
from producer.frontend.errors import error_response
from producer.frontend.gateway import Gateway
from producer.refusals import check_limits
from schemas.api import CompletionRequest, CompletionResponse, ErrorBody
from schemas.wire import Sampling

ROUTE = "/v1/completion"


def router(front: Gateway, authenticated: Auth) -> APIRouter:
    """The router of ``/v1/completion`` over one gateway."""
    routes = APIRouter()

    @routes.post(
        ROUTE,
        response_model=CompletionResponse,
        responses={
            401: {"model": ErrorBody},
            404: {"model": ErrorBody},
            422: {"model": ErrorBody},
            503: {"model": ErrorBody},
            504: {"model": ErrorBody},
        },
    )
    async def completion(
        body: CompletionRequest, request: Request, key_id: Annotated[str, Depends(authenticated)]
    ) -> Response:
        models = body.models
        front.label(request, models)
        front.check_access(key_id, models)
        front.check_room()
        specs = front.check_models(models)
        sampling = Sampling.of_request(body)
        check_limits(sampling, specs)
        await front.admit(key_id)
        return await _complete(front, body, models, sampling, key_id)

    return routes


async def _complete(
    front: Gateway, body: CompletionRequest, models: list[str], sampling: Sampling, key_id: str
) -> Response:
    prompts = [body.prompt] * len(models)
    tasks = front.tasks_for(uuid.uuid4(), models, sampling, key_id, prompts=prompts)
    settled = await front.run(tasks)
    if isinstance(settled.answer, ErrorBody):
        return error_response(settled.status, settled.answer.error)
    return Response(settled.answer.model_dump_json(), media_type="application/json")
