"""OpenAI-compatible routes: ``/v1/completions`` and ``/v1/chat/completions``, streaming too.

Both go through the same path as ``/v1/completion``: one task per choice (``n`` copies of each
prompt), the model's consumer group, the reply partition. Errors keep OpenAI's shape and
statuses (400 invalid parameter, 401 bad key, 404 unknown model, 429, 5xx), so the official SDK
raises its usual exception classes. With ``stream: true`` the answer is server-sent events:
text deltas as the worker generates them, a last chunk per choice with its finish reason, the
usage when ``stream_options.include_usage`` asks, then ``[DONE]``. A client that goes away
cancels its request on the workers.
"""

import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from producer.assemble import assemble
from producer.frontend.auth import Auth
from producer.frontend.errors import error_response
from producer.frontend.gateway import Gateway
from producer.frontend.relay import Chunks, stream_events
from producer.refusals import check_limits
from schemas.api import ErrorBody
from schemas.openai import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionsRequest,
    CompletionsRequest,
    OpenAIUsage,
    TextChoice,
    TextCompletion,
)
from schemas.wire import ChatMessage, ResultMessage, Sampling, TaskMessage


def router(front: Gateway, authenticated: Auth) -> APIRouter:
    """The router of the OpenAI-compatible routes over one gateway."""
    routes = APIRouter()

    @routes.post("/v1/completions", response_model=TextCompletion)
    async def completions(
        body: CompletionsRequest, request: Request, key_id: Annotated[str, Depends(authenticated)]
    ) -> Response:
        prompts = [p for p in body.prompts for _ in range(body.n)]
        tasks = _plan(front, request, body, key_id, body.max_tokens, prompts=prompts)
        if body.stream:
            return _sse(front, tasks, _TextChunks(tasks[0], body.model), _include_usage(body))
        results, status, error = await _run(front, tasks)
        if error is not None:
            return error_response(status, error.error)
        choices = [
            TextChoice(text=_text(r), index=i, finish_reason=_finish(r))
            for i, r in sorted(results.items())
        ]
        answer = TextCompletion(
            id=f"cmpl-{tasks[0].request_id}",
            created=int(time.time()),
            model=body.model,
            choices=choices,
            usage=_usage(results, body.n),
        )
        return Response(answer.model_dump_json(), media_type="application/json")

    @routes.post("/v1/chat/completions", response_model=ChatCompletion)
    async def chat_completions(
        body: ChatCompletionsRequest,
        request: Request,
        key_id: Annotated[str, Depends(authenticated)],
    ) -> Response:
        messages = tuple(ChatMessage(role=m.role, content=m.text) for m in body.messages)
        tasks = _plan(front, request, body, key_id, body.token_limit, messages=messages)
        if body.stream:
            return _sse(front, tasks, _ChatChunks(tasks[0], body.model), _include_usage(body))
        results, status, error = await _run(front, tasks)
        if error is not None:
            return error_response(status, error.error)
        choices = [
            ChatChoice(
                index=i, message=AssistantMessage(content=_text(r)), finish_reason=_finish(r)
            )
            for i, r in sorted(results.items())
        ]
        answer = ChatCompletion(
            id=f"chatcmpl-{tasks[0].request_id}",
            created=int(time.time()),
            model=body.model,
            choices=choices,
            usage=_usage(results, body.n),
        )
        return Response(answer.model_dump_json(), media_type="application/json")

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
    )


async def _run(
    front: Gateway, tasks: list[TaskMessage]
) -> tuple[dict[int, ResultMessage], int, ErrorBody | None]:
    started = time.perf_counter()
    models = [t.model for t in tasks]
    results = await front.run(tasks)
    request_id = uuid.UUID(tasks[0].request_id)
    status, answer = assemble(request_id, models, results, front.settings.request_timeout_s)
    front.observe(models, status, time.perf_counter() - started)
    return results, status, answer if isinstance(answer, ErrorBody) else None


def _text(result: ResultMessage) -> str:
    return result.choice.text if result.choice else ""


def _finish(result: ResultMessage) -> str:
    return result.choice.finish_reason if result.choice else "stop"


def _usage(results: dict[int, ResultMessage], n: int) -> OpenAIUsage:
    # OpenAI counts a prompt once however many choices it has.
    choices = [r.choice for _, r in sorted(results.items()) if r.choice]
    prompt = sum(c.prompt_tokens for i, c in enumerate(choices) if i % n == 0)
    completion = sum(c.completion_tokens for c in choices)
    return OpenAIUsage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


def _include_usage(body: CompletionsRequest | ChatCompletionsRequest) -> bool:
    return bool(body.stream_options and body.stream_options.include_usage)


class _TextChunks:
    """Chunks of a streamed text completion."""

    def __init__(self, task: TaskMessage, model: str) -> None:
        self._base = {
            "id": f"cmpl-{task.request_id}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
        }

    def opening(self, index: int) -> dict[str, Any] | None:
        return None

    def delta(self, index: int, text: str, finish: str | None = None) -> dict[str, Any]:
        choice = {"text": text, "index": index, "logprobs": None, "finish_reason": finish}
        return self._base | {"choices": [choice]}

    def usage(self, usage: OpenAIUsage) -> dict[str, Any]:
        return self._base | {"choices": [], "usage": usage.model_dump()}


class _ChatChunks:
    """Chunks of a streamed chat completion (``chat.completion.chunk``)."""

    def __init__(self, task: TaskMessage, model: str) -> None:
        self._base = {
            "id": f"chatcmpl-{task.request_id}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }

    def opening(self, index: int) -> dict[str, Any] | None:
        return self._choice(index, {"role": "assistant", "content": ""}, None)

    def delta(self, index: int, text: str, finish: str | None = None) -> dict[str, Any]:
        return self._choice(index, {"content": text} if text else {}, finish)

    def usage(self, usage: OpenAIUsage) -> dict[str, Any]:
        return self._base | {"choices": [], "usage": usage.model_dump()}

    def _choice(self, index: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return self._base | {"choices": [choice]}


def _sse(
    front: Gateway, tasks: list[TaskMessage], chunks: Chunks, include_usage: bool
) -> StreamingResponse:
    events = stream_events(front, tasks, chunks, include_usage)
    return StreamingResponse(events, media_type="text/event-stream")
