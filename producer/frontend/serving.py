"""One serving object per OpenAI endpoint, its full and streamed answers as sibling methods.

As in vLLM's ``entrypoints/openai``: the routes parse and plan, ``TextServing`` and
``ChatServing`` answer. Both answers run the gateway's one lifecycle (``Gateway.flight``) and
report the usage of one function, so a streamed answer cannot count differently from a full one.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, ClassVar

from fastapi.responses import Response, StreamingResponse

from producer.assemble import openai_usage
from producer.frontend.errors import error_response
from producer.frontend.gateway import Gateway
from producer.frontend.relay import DONE, Chunks, Relay, event
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
from schemas.wire import ResultMessage, TaskMessage

Body = CompletionsRequest | ChatCompletionsRequest


class _Chunks:
    """The chunks of one streamed answer: the shared envelope; subclasses shape a choice."""

    prefix: ClassVar[str]
    kind: ClassVar[str]

    def __init__(self, task: TaskMessage, model: str) -> None:
        self._base = {
            "id": f"{self.prefix}-{task.request_id}",
            "object": self.kind,
            "created": int(time.time()),
            "model": model,
        }

    def opening(self, index: int) -> dict[str, Any] | None:
        """No opening chunk unless the kind has one."""
        return None

    def usage(self, usage: OpenAIUsage) -> dict[str, Any]:
        """The usage chunk, with no choices."""
        return self._base | {"choices": [], "usage": usage.model_dump()}

    def _choice(self, index: int, fields: dict[str, Any], finish: str | None) -> dict[str, Any]:
        choice = {"index": index, **fields, "logprobs": None, "finish_reason": finish}
        return self._base | {"choices": [choice]}


class TextChunks(_Chunks):
    """Chunks of a streamed text completion."""

    prefix, kind = "cmpl", "text_completion"

    def delta(self, index: int, text: str, finish: str | None = None) -> dict[str, Any]:
        """A text delta, or the closing chunk of a choice."""
        return self._choice(index, {"text": text}, finish)


class ChatChunks(_Chunks):
    """Chunks of a streamed chat completion (``chat.completion.chunk``)."""

    prefix, kind = "chatcmpl", "chat.completion.chunk"

    def opening(self, index: int) -> dict[str, Any] | None:
        """The assistant's role, before any text."""
        return self._choice(index, {"delta": {"role": "assistant", "content": ""}}, None)

    def delta(self, index: int, text: str, finish: str | None = None) -> dict[str, Any]:
        """A content delta, or the closing chunk of a choice (empty delta)."""
        return self._choice(index, {"delta": {"content": text} if text else {}}, finish)


class _Serving:
    """The full and the streamed answer of one endpoint, over one gateway."""

    chunks: ClassVar[type[TextChunks | ChatChunks]]
    completion: ClassVar[type[TextCompletion] | type[ChatCompletion]]

    def __init__(self, front: Gateway) -> None:
        self.front = front

    async def full(self, body: Body, tasks: list[TaskMessage]) -> Response:
        """Publish, wait until the deadline, answer the endpoint's JSON (or the error)."""
        settled = await self.front.run(tasks)
        if isinstance(settled.answer, ErrorBody):
            return error_response(settled.status, settled.answer.error)
        answer = self._answer(body, tasks, settled.results)
        return Response(answer.model_dump_json(), media_type="application/json")

    async def stream(self, body: Body, tasks: list[TaskMessage]) -> StreamingResponse:
        """Server-sent events: deltas, a closing chunk per choice, the usage if asked, [DONE]."""
        events = self._events(body, tasks, self.chunks(tasks[0], body.model))
        # Run the events up to the publish before the 200 goes out: a broker that is down is
        # then a 503 like an unstreamed request's, not a stream that breaks after its headers.
        await anext(events)
        return StreamingResponse(_rest(events), media_type="text/event-stream")

    async def _events(
        self, body: Body, tasks: list[TaskMessage], chunks: Chunks
    ) -> AsyncGenerator[bytes]:
        async with self.front.flight(tasks, stream=True) as flight:
            assert flight.stream is not None
            yield b""  # published: what ``stream`` waits for before answering (never sent)
            for index in range(len(tasks)):
                if (first := chunks.opening(index)) is not None:
                    yield event(first)
            relay = Relay(len(tasks), chunks)
            futures = flight.pending.futures
            queue, accept = flight.stream.queue, flight.stream.accept
            async for raw in relay.run(queue, accept, futures, flight.deadline):
                yield raw
            settled = self.front.settle(flight, relay.results)
        # The flight has ended (gauge down, futures forgotten) before the caller reads [DONE].
        if isinstance(settled.answer, ErrorBody):
            yield event(settled.answer.model_dump(mode="json", exclude_none=True))
        elif body.stream_options and body.stream_options.include_usage:
            yield event(chunks.usage(openai_usage(settled.results, body.n)))
        yield DONE

    def _answer(
        self, body: Body, tasks: list[TaskMessage], results: dict[int, ResultMessage]
    ) -> TextCompletion | ChatCompletion:
        fields = {
            "id": f"{self.chunks.prefix}-{tasks[0].request_id}",
            "created": int(time.time()),
            "model": body.model,
            "choices": [self._choice(i, r) for i, r in sorted(results.items())],
            "usage": openai_usage(results, body.n),
        }
        return self.completion.model_validate(fields)

    def _choice(self, index: int, result: ResultMessage) -> TextChoice | ChatChoice:
        raise NotImplementedError


class TextServing(_Serving):
    """``/v1/completions``."""

    chunks, completion = TextChunks, TextCompletion

    def _choice(self, index: int, result: ResultMessage) -> TextChoice:
        return TextChoice(text=_text(result), index=index, finish_reason=_finish(result))


class ChatServing(_Serving):
    """``/v1/chat/completions``."""

    chunks, completion = ChatChunks, ChatCompletion

    def _choice(self, index: int, result: ResultMessage) -> ChatChoice:
        message = AssistantMessage(content=_text(result))
        return ChatChoice(index=index, message=message, finish_reason=_finish(result))


async def _rest(events: AsyncGenerator[bytes]) -> AsyncIterator[bytes]:
    """The events after the publish; closing this closes them (and so ends their flight)."""
    try:
        async for item in events:
            yield item
    finally:
        await events.aclose()


def _text(result: ResultMessage) -> str:
    return result.choice.text if result.choice else ""


def _finish(result: ResultMessage) -> str:
    return result.choice.finish_reason if result.choice else "stop"
