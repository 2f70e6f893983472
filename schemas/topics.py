"""Kafka topic and consumer-group names, in one place."""

from __future__ import annotations

from dataclasses import dataclass

REQUESTS = "completions.requests"
RESULTS = "completions.results"
DLQ = "completions.dlq"
JOBS = "completions.jobs"
STREAM = "completions.stream"
CANCEL = "completions.cancel"
BULK_SUFFIX = ".bulk"


@dataclass(frozen=True, slots=True)
class Topics:
    """Every topic and group name, under an optional prefix (one prefix per deployment)."""

    prefix: str = ""

    def requests(self, model: str) -> str:
        """Interactive lane of one public model."""
        return f"{self.prefix}{REQUESTS}.{model}"

    def bulk(self, model: str) -> str:
        """Bulk (offline job) lane of one public model."""
        return f"{self.prefix}{REQUESTS}.{model}{BULK_SUFFIX}"

    @property
    def results(self) -> str:
        """Where workers put one result per (request id, choice index)."""
        return f"{self.prefix}{RESULTS}"

    @property
    def stream(self) -> str:
        """Text deltas of streaming tasks, to the caller's reply partition (not transactional)."""
        return f"{self.prefix}{STREAM}"

    @property
    def cancel(self) -> str:
        """Requests whose callers went away; every worker reads it all."""
        return f"{self.prefix}{CANCEL}"

    @property
    def dlq(self) -> str:
        """Where records that could not be processed go, with the reason in headers."""
        return f"{self.prefix}{DLQ}"

    @property
    def jobs(self) -> str:
        """Compacted topic of bulk job manifests."""
        return f"{self.prefix}{JOBS}"

    def worker_group(self, model: str) -> str:
        """The consumer group of the workers of one model."""
        return f"{self.prefix}kc-worker.{model}"
