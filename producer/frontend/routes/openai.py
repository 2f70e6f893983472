"""OpenAI-compatible routes: ``/v1/completions`` and ``/v1/chat/completions``, streaming too.

Both go through the same path as ``/v1/completion``: one task per choice (``n`` copies of each
prompt), the model's consumer group, the reply partition. Errors keep OpenAI's shape and
statuses (400 invalid parameter, 401 bad key, 404 unknown model, 429, 5xx), so the official SDK
raises its usual exception classes. With ``stream: true`` the answer is server-sent events:
text deltas as the worker generates them, a last chunk per choice with its finish reason, the
usage when ``stream_options.include_usage`` asks, then ``[DONE]``. A client that goes away
cancels its request on the workers. The answers come from ``producer.frontend.serving``.
"""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from producer.frontend.auth import Auth
from producer.frontend.gateway import Gateway
from producer.frontend.serving import ChatServing, TextServing
from producer.refusals import check_limits
from schemas.openai import (
    ChatCompletion,
    ChatCompletionsRequest,
    CompletionsRequest,
    TextCompletion,
)
from schemas.wire import ChatMessage, Sampling, TaskMessage


def router(front: Gateway, authenticated: Auth) -> APIRouter:
    """The router of the OpenAI-compatible routes over one gateway."""
    routes = APIRouter()
    text, chat = TextServing(front), ChatServing(front)

    @routes.post("/v1/completions", response_model=TextCompletion)
    async def completions(
        body: CompletionsRequest, request: Request, key_id: Annotated[str, Depends(authenticated)]
    ) -> Response:
        prompts = [p for p in body.prompts for _ in range(body.n)]
        tasks = _plan(front, request, body, key_id, body.max_tokens, prompts=prompts)
        await front.admit(key_id)
        if body.stream:
            return await text.stream(body, tasks)
        return await text.full(body, tasks)

    @routes.post("/v1/chat/completions", response_model=ChatCompletion)
    async def chat_completions(
        body: ChatCompletionsRequest,
        request: Request,
        key_id: Annotated[str, Depends(authenticated)],
    ) -> Response:
        messages = tuple(ChatMessage(role=m.role, content=m.text) for m in body.messages)
        tasks = _plan(front, request, body, key_id, body.token_limit, messages=messages)
        await front.admit(key_id)
        if body.stream:
            return await chat.stream(body, tasks)
        return await chat.full(body, tasks)

    return routes


def _plan(
    front: Gateway,
    request: Request,
    body: CompletionsRequest | ChatCompletionsRequest,
    key_id: str,
    max_tokens: int,
    *,
    prompts: list[str] | None = None,
    messages: tuple[ChatMessage, ...] | None = None,
) -> list[TaskMessage]:
    front.label(request, [body.model])
    front.check_access(key_id, [body.model])
    front.check_room()
    specs = front.check_models([body.model])
    sampling = Sampling.of_openai(body, max_tokens)
    check_limits(sampling, specs)
    count = len(prompts) if prompts is not None else body.n
    return front.tasks_for(
        uuid.uuid4(),
        [body.model] * count,
        sampling,
        key_id,
        prompts=prompts,
        messages=messages,
        stream=body.stream,
        choices_per_prompt=body.n,
    )
