"""What one benchmark run measured: latencies, tokens, errors, and the figures derived."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass(slots=True)
class Run:
    """The requests of one (benchmark, system, load) cell."""

    name: str
    system: str
    load: str
    latencies_s: list[float] = field(default_factory=list)
    tokens: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def ok(self, latency_s: float, tokens: int = 0) -> None:
        """One request succeeded."""
        self.latencies_s.append(latency_s)
        self.tokens += tokens

    def summary(self) -> dict[str, Any]:
        """The figures of this run, JSON-ready."""
        n = len(self.latencies_s)
        elapsed = self.elapsed_s or 1e-9
        return {
            "benchmark": self.name,
            "system": self.system,
            "load": self.load,
            "requests": n,
            "errors": self.errors,
            "elapsed_s": round(self.elapsed_s, 3),
            "tokens_per_s": round(self.tokens / elapsed, 1),
            "requests_per_s": round(n / elapsed, 1),
            "p50_ms": round(percentile(self.latencies_s, 50) * 1000, 2),
            "p99_ms": round(percentile(self.latencies_s, 99) * 1000, 2),
            **self.extra,
        }
