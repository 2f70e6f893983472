"""Kafka topic and consumer-group names, in one place."""

from __future__ import annotations

from dataclasses import dataclass

REQUESTS = "completions.requests"
RESULTS = "completions.results"
DLQ = "completions.dlq"
STREAM = "completions.stream"
CANCEL = "completions.cancel"
BULK_SUFFIX = ".bulk"
FILES = "completions.files"
FILE_CHUNKS = "completions.file-chunks"
BATCHES = "completions.batches"
BATCH_CANCELS = "completions.batch-cancels"
DISPATCH = "completions.dispatch"
BATCH_RESULTS = "completions.batch."
KEYS = "completions.keys"
USAGE = "completions.usage"
ADMISSIONS = "completions.admissions"


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
    def files(self) -> str:
        """Compacted topic of uploaded files' metadata, keyed by file id."""
        return f"{self.prefix}{FILES}"

    @property
    def file_chunks(self) -> str:
        """Compacted topic of file content, in chunks under the broker's message size."""
        return f"{self.prefix}{FILE_CHUNKS}"

    @property
    def batches(self) -> str:
        """Compacted topic of batch state, keyed by batch id (one materialiser per front end)."""
        return f"{self.prefix}{BATCHES}"

    @property
    def batch_cancels(self) -> str:
        """Compacted topic of cancelled batches; every worker reads it whole."""
        return f"{self.prefix}{BATCH_CANCELS}"

    @property
    def dispatch(self) -> str:
        """Compacted topic of dispatch cursors, keyed by batch id; its one partition's owner
        in the dispatch group is the one dispatcher."""
        return f"{self.prefix}{DISPATCH}"

    @property
    def dispatch_group(self) -> str:
        """The front ends' group that elects the dispatcher."""
        return f"{self.prefix}kc-dispatch"

    @property
    def dispatcher_transaction(self) -> str:
        """The dispatcher's transactional id: one for every front end, so a new dispatcher
        fences the one before it."""
        return f"{self.prefix}kc-dispatcher"

    @property
    def keys(self) -> str:
        """Compacted topic of managed API keys (hashes, never keys), keyed by key id."""
        return f"{self.prefix}{KEYS}"

    @property
    def usage(self) -> str:
        """Compacted topic of the usage ledger: per-minute buckets and the ledger's cursor."""
        return f"{self.prefix}{USAGE}"

    @property
    def usage_group(self) -> str:
        """The front ends' group that elects the ledger's one writer."""
        return f"{self.prefix}kc-usage"

    @property
    def usage_transaction(self) -> str:
        """The ledger writer's transactional id (a new writer fences the one before it)."""
        return f"{self.prefix}kc-ledger"

    @property
    def admissions(self) -> str:
        """Requests admitted under a key with a rate limit, so every front end counts them."""
        return f"{self.prefix}{ADMISSIONS}"

    def batch_results(self, batch_id: str) -> str:
        """The results of one batch's lines (one partition): what its output is read from."""
        return f"{self.prefix}{BATCH_RESULTS}{batch_id}"

    def is_batch_results(self, topic: str) -> bool:
        """Whether ``topic`` is a batch results topic of this deployment."""
        return topic.startswith(f"{self.prefix}{BATCH_RESULTS}")

    def worker_group(self, model: str) -> str:
        """The consumer group of the workers of one model."""
        return f"{self.prefix}kc-worker.{model}"
