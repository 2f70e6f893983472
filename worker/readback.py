"""A step's tokens read back a step late, through page-locked host memory, so host and device
overlap.

A blocking readback (``tolist``) makes the host wait for the step it just launched before it can
prepare the next one: on a GPU host and device time then add up. Here a step's tokens are copied
into page-locked (pinned) host memory without blocking and a CUDA event is recorded after the
copy; the host launches the next step first and only then waits on the event (usually already
passed). Two slots are used in turn, and a slot is written again only once its tokens were read.

Off CUDA the copy is synchronous and the event a stand-in that has always fired, so the ring's
logic (slots, their growth, the order of reads) runs in the suite on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

SLOTS = 2  # the step being read and the step running: one step of lag


class _Event(Protocol):
    def synchronize(self) -> None: ...


class _Fired:
    """The CPU stand-in of a CUDA event: CPU work is done when it returns."""

    def synchronize(self) -> None:
        """Nothing to wait for."""


@dataclass(frozen=True, slots=True)
class Pending:
    """One step's tokens on their way to the host."""

    slot: int
    rows: int
    event: _Event


class Readback:
    """A ring of host buffers that device tokens are copied into without blocking."""

    def __init__(self, device: torch.device, slots: int = SLOTS) -> None:
        self._cuda = device.type == "cuda"
        self._host = [self._buffer(64) for _ in range(slots)]
        self._busy = [False] * slots
        self._next = 0

    def start(self, tokens: torch.Tensor) -> Pending:
        """Copy ``tokens`` (``[rows]``, int64, on the device) to the next slot, not waiting."""
        slot = self._next
        if self._busy[slot]:
            raise RuntimeError(f"readback slot {slot} written again before it was read")
        rows = tokens.shape[0]
        if rows > self._host[slot].shape[0]:
            self._host[slot] = self._buffer(2 * rows)
        self._host[slot].narrow(0, 0, rows).copy_(tokens, non_blocking=self._cuda)
        self._busy[slot] = True
        self._next = (slot + 1) % len(self._host)
        return Pending(slot, rows, self._event())

    def read(self, pending: Pending) -> list[int]:
        """The tokens of ``pending``, once the copy is done; frees its slot."""
        if not self._busy[pending.slot]:
            raise RuntimeError(f"readback slot {pending.slot} read twice")
        pending.event.synchronize()
        tokens: list[int] = self._host[pending.slot].narrow(0, 0, pending.rows).tolist()
        self._busy[pending.slot] = False
        return tokens

    def drop(self, pending: Pending) -> None:
        """Give up on ``pending`` (its rows are gone): its slot is free again."""
        self._busy[pending.slot] = False

    def _buffer(self, rows: int) -> torch.Tensor:
        # Pinned memory is what lets a device-to-host copy run without blocking the host.
        return torch.empty(rows, dtype=torch.long, pin_memory=self._cuda)

    def _event(self) -> _Event:
        if not self._cuda:
            return _Fired()
        event = torch.cuda.Event()  # type: ignore[no-untyped-call]  # CUDA only
        event.record()
        return event
