"""The SSE relay: deltas in seq order, the final text exactly once, errors and deadlines."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from producer.frontend.deltas import StreamState
from producer.frontend.relay import Relay
from schemas.openai import OpenAIUsage
from schemas.wire import ChoiceResult, ResultMessage, StreamChunk, TaskError


class _Chunks:
    def opening(self, index: int) -> dict[str, Any] | None:
        return None

    def delta(self, index: int, text: str, finish: str | None = None) -> dict[str, Any]:
        return {"i": index, "t": text, "f": finish}

    def usage(self, usage: OpenAIUsage) -> dict[str, Any]:
        return {"usage": usage.model_dump()}


def _result(index: int, text: str | None, finish: str = "stop") -> ResultMessage:
    if text is None:
        return ResultMessage(
            request_id="r",
            choice_index=index,
            model="m",
            worker_id="w",
            error=TaskError(code="backend_error", message="boom"),
        )
    choice = ChoiceResult(
        text=text,
        finish_reason=finish,
        prompt_tokens=3,
        completion_tokens=2,
        prediction_time_ms=1,
        created=0,
    )
    return ResultMessage(
        request_id="r", choice_index=index, model="m", worker_id="w", choice=choice
    )


def _chunk(index: int, seq: int, delta: str) -> StreamChunk:
    return StreamChunk(request_id="r", choice_index=index, seq=seq, delta=delta)


async def _relay(
    events: list[StreamChunk | tuple[int, ResultMessage]], choices: int, within_s: float = 2.0
) -> tuple[list[dict[str, Any]], Relay]:
    state = StreamState()
    loop = asyncio.get_running_loop()
    futures: dict[int, asyncio.Future[ResultMessage]] = {
        i: loop.create_future() for i in range(choices)
    }

    async def feed() -> None:
        for event in events:
            await asyncio.sleep(0.01)
            if isinstance(event, StreamChunk):
                state.queue.put_nowait(event)
            else:
                futures[event[0]].set_result(event[1])

    feeder = asyncio.create_task(feed())
    relay = Relay(choices, _Chunks())
    out = [
        json.loads(raw.removeprefix(b"data: "))
        async for raw in relay.run(state.queue, state.accept, futures, time.time() + within_s)
    ]
    await feeder
    return out, relay


async def test_deltas_then_the_rest_of_the_final_text() -> None:
    out, relay = await _relay(
        [_chunk(0, 0, "Hel"), _chunk(0, 1, "lo"), (0, _result(0, "Hello world"))], 1
    )
    assert out == [
        {"i": 0, "t": "Hel", "f": None},
        {"i": 0, "t": "lo", "f": None},
        {"i": 0, "t": " world", "f": "stop"},
    ]
    assert "".join(e["t"] for e in out) == "Hello world"
    assert set(relay.results) == {0}


async def test_duplicate_and_out_of_order_chunks_are_dropped() -> None:
    events: list[StreamChunk | tuple[int, ResultMessage]] = [
        _chunk(0, 0, "a"),
        _chunk(0, 0, "a"),
        _chunk(0, 2, "c"),
        _chunk(0, 1, "b"),
        (0, _result(0, "abc!")),
    ]
    out, _ = await _relay(events, 1)
    assert "".join(e["t"] for e in out) == "abc!"
    assert [e["t"] for e in out] == ["a", "b", "c!"]


async def test_chunks_after_the_result_are_ignored_and_choices_interleave() -> None:
    events: list[StreamChunk | tuple[int, ResultMessage]] = [
        _chunk(1, 0, "x"),
        (0, _result(0, "zero")),
        _chunk(0, 0, "late"),
        (1, _result(1, "xy")),
    ]
    out, _ = await _relay(events, 2)
    by_choice = {i: "".join(e["t"] for e in out if e["i"] == i) for i in (0, 1)}
    assert by_choice == {0: "zero", 1: "xy"}


async def test_an_error_result_closes_its_choice_without_text() -> None:
    out, relay = await _relay([(0, _result(0, None))], 1)
    assert out == []
    assert relay.results[0].error is not None


@pytest.mark.parametrize("choices", [1, 2])
async def test_the_deadline_ends_the_relay(choices: int) -> None:
    started = time.monotonic()
    out, relay = await _relay([_chunk(0, 0, "par")], choices, within_s=0.3)
    assert time.monotonic() - started < 2
    assert out == [{"i": 0, "t": "par", "f": None}]
    assert relay.results == {}
