"""The echo backend: deterministic text of max_tokens tokens, stop sequences honoured."""

from __future__ import annotations

import pytest

from schemas.registry import ModelSpec
from schemas.settings import Settings
from tests.unit.factories import sampling, task, task_message
from worker.backend import create_backend
from worker.backends.echo import EchoBackend, echo_text
from worker.task import Completion, Delta, Outcome, Task


async def _run(backend: EchoBackend, tasks: list[Task]) -> list[tuple[Task, Outcome]]:
    """The final outcomes (a non-streaming task gets no deltas)."""
    pairs = [pair async for pair in backend.run(tasks)]
    assert not any(isinstance(event, Delta) for _, event in pairs)
    return [(task, event) for task, event in pairs if not isinstance(event, Delta)]


def _backend(max_concurrency: int = 8) -> EchoBackend:
    return EchoBackend(ModelSpec(name="echo", backend="echo", max_concurrency=max_concurrency))


@pytest.mark.parametrize("max_tokens", [1, 2, 5, 64, 257])
def test_echo_text_has_max_tokens_tokens(max_tokens: int) -> None:
    assert len(echo_text("the quick brown fox", max_tokens).split()) == max_tokens


def test_echo_text_cycles_the_prompt_words() -> None:
    assert echo_text("a b c", 7) == "a b c a b c a"


def test_echo_text_is_deterministic() -> None:
    assert echo_text("Once upon a time", 40) == echo_text("Once upon a time", 40)


def test_echo_text_of_a_blank_prompt() -> None:
    assert echo_text("   ", 3) == "echo echo echo"


async def test_without_stop_the_answer_is_max_tokens_long_and_finishes_by_length() -> None:
    t = task(task_message(prompt="one two three", sampling=sampling(max_tokens=5)))
    [(returned, outcome)] = await _run(_backend(), [t])
    assert returned is t
    assert isinstance(outcome, Completion)
    assert outcome.text == "one two three one two"
    assert outcome.finish_reason == "length"
    assert outcome.completion_tokens == 5
    assert outcome.prompt_tokens == 3
    assert outcome.prediction_time_ms >= 0


async def test_a_stop_sequence_cuts_the_text_and_finishes_by_stop() -> None:
    t = task(task_message(prompt="one two three", sampling=sampling(max_tokens=9, stop=("three",))))
    [(_, outcome)] = await _run(_backend(), [t])
    assert isinstance(outcome, Completion)
    assert outcome.text == "one two "
    assert outcome.finish_reason == "stop"
    assert outcome.completion_tokens == 2


async def test_a_stop_at_the_start_gives_empty_text() -> None:
    t = task(task_message(prompt="one two", sampling=sampling(max_tokens=4, stop=("one",))))
    [(_, outcome)] = await _run(_backend(), [t])
    assert isinstance(outcome, Completion)
    assert (outcome.text, outcome.finish_reason, outcome.completion_tokens) == ("", "stop", 0)


async def test_a_stop_that_never_appears_finishes_by_length() -> None:
    t = task(task_message(prompt="one two", sampling=sampling(max_tokens=4, stop=("zzz",))))
    [(_, outcome)] = await _run(_backend(), [t])
    assert isinstance(outcome, Completion)
    assert (outcome.text, outcome.finish_reason) == ("one two one two", "length")


async def test_every_task_of_a_batch_gets_its_own_outcome() -> None:
    tasks = [
        task(task_message(choice_index=i, prompt=f"w{i}", sampling=sampling(max_tokens=i + 1)))
        for i in range(4)
    ]
    pairs = await _run(_backend(), tasks)
    assert [t for t, _ in pairs] == tasks
    texts = [o.text for _, o in pairs if isinstance(o, Completion)]
    assert texts == ["w0", "w1 w1", "w2 w2 w2", "w3 w3 w3 w3"]


async def test_capacity_comes_from_the_registry_and_aclose_is_harmless() -> None:
    backend = _backend(max_concurrency=123)
    assert backend.capacity == 123
    await backend.aclose()


async def test_create_backend_builds_echo_for_an_echo_spec() -> None:
    spec = ModelSpec(name="echo", backend="echo", max_concurrency=7)
    backend = await create_backend(spec, Settings())
    assert isinstance(backend, EchoBackend)
    assert backend.capacity == 7
