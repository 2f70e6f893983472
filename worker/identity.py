"""A worker's identity: host and slot, stable across restarts on the same host.

The identity names the worker's transactional producers. A worker killed mid-transaction
leaves that transaction open, and read_committed readers of its partitions wait behind it
until it times out. A restarted worker that claims the same slot uses the same transactional
id, so Kafka fences the dead producer and aborts its transaction at once. Slots are claimed
with an advisory lock file in the cache directory: the lowest free slot on this host wins, and
the lock dies with the process however it ends.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from typing import IO

_MAX_SLOTS = 1024


class WorkerSlot:
    """A claimed slot; held until ``release`` or the process ends."""

    def __init__(self, worker_id: str, handle: IO[str] | None) -> None:
        self.worker_id = worker_id
        self._handle = handle

    def release(self) -> None:
        """Free the slot for another worker on this host."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def claim_slot(lock_dir: Path, scope: str, explicit_id: str | None = None) -> WorkerSlot:
    """The lowest free slot of ``scope`` (a deployment and model set) on this host."""
    if explicit_id:
        return WorkerSlot(explicit_id, None)
    host = socket.gethostname()
    lock_dir.mkdir(parents=True, exist_ok=True)
    for slot in range(_MAX_SLOTS):
        handle = (lock_dir / f"{_safe(scope)}-{slot}.lock").open("w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        return WorkerSlot(f"{host}-{slot}", handle)
    raise RuntimeError(f"more than {_MAX_SLOTS} workers of {scope} on this host")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
