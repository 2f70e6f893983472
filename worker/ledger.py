"""The ledger: what a worker has taken from each partition and what has been decided for it.

Results are published, and offsets committed, in one Kafka transaction per flush. To keep
exactly-once for read_committed readers, a flush takes from each partition only the run of
decided records at its head (offsets in order): committing offset N+1 is then always the
same act as publishing the outcomes of every record up to N. A record decided out of order
waits for the ones before it; nothing is ever committed ahead of an undecided record.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.wire import ResultMessage
from worker.task import DeadLetter, Task

Decision = tuple[Task, ResultMessage] | DeadLetter
TP = tuple[str, int]


@dataclass(slots=True)
class _Partition:
    pending: dict[int, Decision | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Ready:
    """Decided records at the head of one partition, and the offset to commit after them."""

    topic: str
    partition: int
    decisions: list[Decision]
    commit_offset: int


class Ledger:
    """Per-partition record of taken offsets and their decisions, in offset order."""

    def __init__(self) -> None:
        self._parts: dict[TP, _Partition] = {}

    def take(self, tp: TP, offset: int) -> None:
        """A record was fetched and is now in flight."""
        self._parts.setdefault(tp, _Partition()).pending[offset] = None

    def decide(self, tp: TP, offset: int, decision: Decision) -> bool:
        """Record the decision for an in-flight record; False when it was dropped meanwhile."""
        part = self._parts.get(tp)
        if part is None or offset not in part.pending:
            return False
        part.pending[offset] = decision
        return True

    def ready(self) -> list[Ready]:
        """The decided head of every partition (without removing it)."""
        out = []
        for (topic, partition), part in self._parts.items():
            head: list[Decision] = []
            last = -1
            for offset, decision in part.pending.items():
                if decision is None:
                    break
                head.append(decision)
                last = offset
            if head:
                out.append(Ready(topic, partition, head, last + 1))
        return out

    def settle(self, ready: list[Ready]) -> None:
        """Forget records whose outcomes were published and offsets committed."""
        for r in ready:
            part = self._parts.get((r.topic, r.partition))
            if part is None:
                continue
            for offset in list(part.pending):
                if offset >= r.commit_offset:
                    break
                del part.pending[offset]

    def drop(self, tps: list[TP]) -> int:
        """Forget partitions this worker no longer owns; returns how many records were dropped."""
        return sum(len(p.pending) for p in (self._parts.pop(tp, None) for tp in tps) if p)

    def in_flight(self, tps: list[TP] | None = None) -> int:
        """How many records are taken but not yet settled (for some partitions, or all)."""
        keys = self._parts.keys() if tps is None else [tp for tp in tps if tp in self._parts]
        return sum(len(self._parts[k].pending) for k in keys)

    def undecided(self) -> int:
        """How many taken records still wait for their outcome."""
        return sum(1 for p in self._parts.values() for d in p.pending.values() if d is None)
