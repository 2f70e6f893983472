"""The backend protocol: a batch of tasks in, one outcome per task out, ``aclose()``.

A backend yields ``(task, outcome)`` pairs as they finish, in any order, so a backend that
finishes rows at different times (vendors, continuous batching) never holds a result back.
It never raises for one task's failure: that is a ``Failure`` outcome. Adding a backend means
one module under ``worker/backends/`` and one line in ``create_backend``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from schemas.metrics import WorkerMetrics
from schemas.registry import ModelSpec
from schemas.settings import Settings
from worker.task import Delta, Outcome, Task


class Backend(Protocol):
    """Runs tasks for one model."""

    @property
    def capacity(self) -> int:
        """How many tasks the worker should keep in flight for this backend."""
        ...

    def throttled_until(self) -> float:
        """Epoch seconds until which the backend asks for no new work (0: not throttled).

        A vendor answering 429 sets this; the worker then pauses the model's partitions
        instead of fetching tasks it would only have to retry.
        """
        ...

    def run(self, tasks: Sequence[Task]) -> AsyncIterator[tuple[Task, Outcome | Delta]]:
        """Run a batch; yield each task's outcome as soon as it is known.

        A streaming task (``message.stream``) may first get ``Delta`` events with its text as
        it is generated; its outcome still comes last, with the whole text.
        """
        ...

    def cancel(self, request_id: str) -> None:
        """Nobody waits for this request any more: stop its tasks if they are still running."""
        ...

    async def aclose(self) -> None:
        """Release the model, threads and connections."""
        ...


async def create_backend(
    spec: ModelSpec, settings: Settings, metrics: WorkerMetrics | None = None
) -> Backend:
    """Build (and load) the backend that serves ``spec`` (vendors count retries in ``metrics``)."""
    if spec.backend == "echo":
        from worker.backends.echo import EchoBackend

        return EchoBackend(spec)
    if spec.backend == "transformers":
        from worker.backends.transformers import TransformersBackend

        return await TransformersBackend.load(spec, settings)
    if spec.backend == "openai":
        from worker.backends.openai import OpenAIBackend

        return OpenAIBackend(spec, settings, metrics=metrics)
    if spec.backend == "cohere":
        from worker.backends.cohere import CohereBackend

        return CohereBackend(spec, settings, metrics=metrics)
    from schemas.errors import ConfigError

    raise ConfigError(f"{spec.name}: the {spec.backend} backend is not available in this build")
