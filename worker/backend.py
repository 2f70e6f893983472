"""The backend protocol: a batch of tasks in, one outcome per task out, ``aclose()``.

A backend yields ``(task, outcome)`` pairs as they finish, in any order, so a backend that
finishes rows at different times (vendors, continuous batching) never holds a result back.
It never raises for one task's failure: that is a ``Failure`` outcome.

Backends register themselves by kind: ``worker/backends/<kind>.py`` decorates its factory with
``@backend_kind("<kind>")``, and ``create_backend`` imports that module only when a worker
serves a model of that kind (so only a worker of a local model imports torch). Adding a
backend is that module plus its kind in ``schemas/kinds.toml``; nothing here changes.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol

from schemas.errors import ConfigError
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


BackendFactory = Callable[[ModelSpec, Settings, WorkerMetrics | None], Awaitable[Backend]]
_FACTORIES: dict[str, BackendFactory] = {}


def backend_kind(kind: str) -> Callable[[BackendFactory], BackendFactory]:
    """Register the decorated coroutine as the factory of ``kind``'s backends."""

    def register(factory: BackendFactory) -> BackendFactory:
        _FACTORIES[kind] = factory
        return factory

    return register


async def create_backend(
    spec: ModelSpec, settings: Settings, metrics: WorkerMetrics | None = None
) -> Backend:
    """Build (and load) the backend that serves ``spec`` (vendors count retries in ``metrics``)."""
    return await backend_factory(spec)(spec, settings, metrics)


def backend_factory(spec: ModelSpec) -> BackendFactory:
    """The registered factory of the kind serving ``spec``, or ConfigError."""
    if spec.backend not in _FACTORIES:
        try:
            importlib.import_module(f"worker.backends.{spec.backend}")
        except ModuleNotFoundError as exc:
            if exc.name != f"worker.backends.{spec.backend}":
                raise  # the module exists but needs a package that is missing
    if spec.backend not in _FACTORIES:
        raise ConfigError(
            f"{spec.name}: the {spec.backend} backend is not available in this build "
            f"(no @backend_kind({spec.backend!r}) in worker/backends/{spec.backend}.py)"
        )
    return _FACTORIES[spec.backend]
