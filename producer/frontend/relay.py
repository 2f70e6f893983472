"""The server-sent events of one streamed answer: deltas and final results merged into chunks.

The request's lifecycle (admission, publishing, deadline, cancellation) is the gateway's
``flight``; ``producer.frontend.serving`` runs a Relay inside it.
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

from schemas.openai import OpenAIUsage
from schemas.wire import ResultMessage, StreamChunk

DONE = b"data: [DONE]\n\n"


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


def event(payload: dict[str, Any]) -> bytes:
    """One server-sent event carrying ``payload`` as compact JSON."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


class Relay:
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
                yield event(self._chunks.delta(chunk.choice_index, chunk.delta))
            for index, future in futures.items():
                if future in done and index not in self.results:
                    for closing in self._close(index, future.result()):
                        yield closing

    def _close(self, index: int, result: ResultMessage) -> list[bytes]:
        self.results[index] = result
        if result.choice is None:
            return []
        text, sent = result.choice.text, self._sent[index]
        rest = text[len(sent) :] if text.startswith(sent) else ""
        return [event(self._chunks.delta(index, rest, result.choice.finish_reason))]
