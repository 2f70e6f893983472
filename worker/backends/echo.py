"""The ``echo`` backend: the load-testing model.

It returns deterministic text of ``max_tokens`` whitespace-separated tokens derived from the
prompt, with no model at all, so a benchmark measures the pipeline (HTTP, Kafka, the worker
loop) and nothing else. Stop sequences are honoured like any model's.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence

from schemas.metrics import WorkerMetrics
from schemas.registry import ModelSpec
from schemas.settings import Settings
from worker.backend import Backend, backend_kind
from worker.prompting import plain_prompt
from worker.stops import cut_at_stop
from worker.task import Completion, Delta, Outcome, Task


def echo_text(prompt: str, max_tokens: int) -> str:
    """The deterministic completion of ``prompt``: its words cycled to ``max_tokens`` tokens."""
    words = prompt.split() or ["echo"]
    return " ".join(words[i % len(words)] for i in range(max_tokens))


class EchoBackend:
    """Answers instantly with ``echo_text``."""

    def __init__(self, spec: ModelSpec) -> None:
        self._capacity = spec.max_concurrency

    @property
    def capacity(self) -> int:
        """Echo keeps as many tasks in flight as the registry allows."""
        return self._capacity

    async def run(self, tasks: Sequence[Task]) -> AsyncIterator[tuple[Task, Outcome | Delta]]:
        """Answer every task at once; a streaming task gets its words as deltas first."""
        for task in tasks:
            outcome = self._complete(task)
            if task.message.stream:
                words = outcome.text.split(" ")
                for i, word in enumerate(words):
                    yield task, Delta(word if i == 0 else " " + word)
            yield task, outcome

    @staticmethod
    def _complete(task: Task) -> Completion:
        started = time.perf_counter()
        msg = task.message
        prompt = plain_prompt(msg)
        text, stopped = cut_at_stop(echo_text(prompt, msg.sampling.max_tokens), msg.sampling.stop)
        return Completion(
            text=text,
            finish_reason="stop" if stopped else "length",
            prompt_tokens=len(prompt.split()),
            completion_tokens=len(text.split()),
            prediction_time_ms=int((time.perf_counter() - started) * 1000),
        )

    def throttled_until(self) -> float:
        """Echo is never throttled."""
        return 0.0

    def cancel(self, request_id: str) -> None:
        """Echo answers at once; there is nothing to stop."""

    async def aclose(self) -> None:
        """Nothing to release."""


@backend_kind("echo")
async def _build(spec: ModelSpec, _settings: Settings, _metrics: WorkerMetrics | None) -> Backend:
    return EchoBackend(spec)
