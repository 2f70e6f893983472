"""The server-sent event stream of one streaming request (OpenAI's chunk protocol)."""

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Protocol

from producer.assemble import assemble
from producer.frontend.gateway import Gateway
from schemas.api import ErrorBody
from schemas.openai import OpenAIUsage
from schemas.wire import ResultMessage, StreamChunk, TaskMessage

log = logging.getLogger(__name__)
_DONE = b"data: [DONE]\n\n"


class Chunks(Protocol):
    """Builds the JSON chunks of one response kind (text or chat)."""

    def opening(self, index: int) -> dict[str, Any] | None:
        """The first chunk of a choice, if the kind has one."""
        ...

    def delta(self, index: int, text: str, finish: str | None = None) -> dict[str, Any]:
        """A text delta, or the closing chunk of a choice when ``finish`` is set."""
        ...

    def usage(self, usage: OpenAIUsage) -> dict[str, Any]:
        """The usage chunk after every choice closed."""
        ...


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


async def stream_events(
    front: Gateway, tasks: list[TaskMessage], chunks: Chunks, include_usage: bool
) -> AsyncIterator[bytes]:
    """Publish the tasks, then relay deltas and results until every choice closed."""
    request_id = tasks[0].request_id
    state = front.streams.open(request_id)
    pending = front.replies.expect(request_id, len(tasks))
    front.in_flight += 1
    started = time.perf_counter()
    finished = False
    try:
        deadline = (tasks[0].deadline or 0.0) or time.time() + front.settings.request_timeout_s
        await front.publisher.publish(tasks, timeout_s=deadline - time.time())
        for index in range(len(tasks)):
            if (first := chunks.opening(index)) is not None:
                yield _event(first)
        relay = _Relay(len(tasks), chunks)
        async for event in relay.run(state.queue, state.accept, pending.futures, deadline):
            yield event
        results = relay.results
        status, answer = assemble(
            uuid.UUID(request_id),
            [t.model for t in tasks],
            results,
            front.settings.request_timeout_s,
        )
        if isinstance(answer, ErrorBody):
            yield _event(answer.model_dump(mode="json", exclude_none=True))
        elif include_usage:
            yield _event(chunks.usage(_usage(results)))
        yield _DONE
        finished = True
        front.observe([t.model for t in tasks], status, time.perf_counter() - started)
    finally:
        front.streams.close(request_id)
        front.replies.forget(request_id)
        front.in_flight -= 1
        if not finished:  # the caller went away (or the stream broke): stop the workers
            front.cancel_later(request_id)


class _Relay:
    """Merges deltas and final results into events, exactly the final text once per choice."""

    def __init__(self, choices: int, chunks: Chunks) -> None:
        self._chunks = chunks
        self._sent = dict.fromkeys(range(choices), "")
        self.results: dict[int, ResultMessage] = {}

    async def run(
        self,
        queue: "asyncio.Queue[StreamChunk]",
        accept: Any,
        futures: dict[int, "asyncio.Future[ResultMessage]"],
        deadline: float,
    ) -> AsyncIterator[bytes]:
        """Yield events until every choice has its result or the deadline passes."""
        while len(self.results) < len(self._sent):
            waiting = [f for i, f in futures.items() if i not in self.results]
            getter = asyncio.ensure_future(queue.get())
            watched: list[asyncio.Future[Any]] = [getter, *waiting]
            done, _ = await asyncio.wait(
                watched,
                timeout=max(0.0, deadline - time.time()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if getter not in done:
                getter.cancel()
            if not done:
                return  # deadline: the caller gets the error event after this
            chunk = getter.result() if getter in done else None
            if chunk and accept(chunk) and chunk.choice_index not in self.results and chunk.delta:
                self._sent[chunk.choice_index] += chunk.delta
                yield _event(self._chunks.delta(chunk.choice_index, chunk.delta))
            for index, future in futures.items():
                if future in done and index not in self.results:
                    for event in self._close(index, future.result()):
                        yield event

    def _close(self, index: int, result: ResultMessage) -> list[bytes]:
        self.results[index] = result
        if result.choice is None:
            return []
        text, sent = result.choice.text, self._sent[index]
        rest = text[len(sent) :] if text.startswith(sent) else ""
        return [_event(self._chunks.delta(index, rest, result.choice.finish_reason))]


def _usage(results: dict[int, ResultMessage]) -> OpenAIUsage:
    choices = [r.choice for r in results.values() if r.choice]
    prompt = choices[0].prompt_tokens if choices else 0
    completion = sum(c.completion_tokens for c in choices)
    return OpenAIUsage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )
