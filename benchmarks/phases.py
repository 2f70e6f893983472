"""Where a decode loop's time goes: prefill, forward, sampling, bookkeeping, and the rest.

``Phases`` wraps a ``DecodeBatch``'s methods with timers: ``admit`` (the prefill of joining
rows, their first tokens included), ``step`` (a decode step), and inside a step the forward
pass and the sampling (the readback of the tokens included). A step's bookkeeping is the rest of
it (the cache's columns, the rows' tokens, stop checks, finished rows leaving); outside the batch
is the wall time spent in neither (the backend's thread and event-loop hand-offs, detokenising
streamed text, waiting for work). On CUDA each timed call waits for the device first, or the
time would land in whichever phase next waits for it: a profile's steps run slower than a plain
run's, and the overlapped readback overlaps nothing.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch

from worker.decode import DecodeBatch

# The batch's attribute timed, and the phase its time counts to.
_TIMED = {
    "admit": "prefill",
    "step": "step",
    "_step": "forward",
    "_draw": "sampling",
    "_draw_on_device": "sampling",
}


class Phases:
    """Seconds spent in each phase of one batch's decode loop."""

    def __init__(self, batch: DecodeBatch) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self._sync = _synchronizer(batch)
        for name, phase in _TIMED.items():
            setattr(batch, name, self._timed(getattr(batch, name), phase))

    def _timed(self, inner: Callable[..., Any], phase: str) -> Callable[..., Any]:
        def timed(*args: Any) -> Any:
            self._sync()
            started = time.perf_counter()
            try:
                return inner(*args)
            finally:
                self._sync()
                self.seconds[phase] += time.perf_counter() - started

        return timed

    def clear(self) -> None:
        """Start counting again (after a warm-up)."""
        self.seconds.clear()

    def shares(self, wall_s: float) -> dict[str, float]:
        """Each phase's share of ``wall_s``, the wall time of the run profiled."""
        s = self.seconds
        parts = {
            "prefill": s["prefill"],
            "forward": s["forward"],
            "sampling": s["sampling"],
            "bookkeeping": s["step"] - s["forward"] - s["sampling"],
            "outside_batch": wall_s - s["prefill"] - s["step"],
        }
        return {name: round(seconds / wall_s, 3) for name, seconds in parts.items()}


def _synchronizer(batch: DecodeBatch) -> Callable[[], None]:
    device = next(batch._model.parameters()).device
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None
