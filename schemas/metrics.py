"""Every Prometheus metric, created against an injected registry (names are a contract).

Names are prefixed ``kc_`` and carry their unit. Labels stay bounded: a model name (from the
registry), a route, a status code, an outcome; never a request id or a key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True, slots=True)
class _Maker:
    """Metrics registered in one registry: a name, its help, its labels (and buckets)."""

    registry: CollectorRegistry

    def counter(self, name: str, doc: str, *labels: str) -> Counter:
        return Counter(name, doc, labels, registry=self.registry)

    def gauge(self, name: str, doc: str, *labels: str) -> Gauge:
        return Gauge(name, doc, labels, registry=self.registry)

    def histogram(self, name: str, doc: str, buckets: tuple[float, ...], *labels: str) -> Histogram:
        return Histogram(name, doc, labels, buckets=buckets, registry=self.registry)


@dataclass(frozen=True, slots=True)
class FrontendMetrics:
    """Metrics of the HTTP front end."""

    requests: Counter
    latency: Histogram
    in_flight: Gauge
    timeouts: Counter
    rejected: Counter
    results_unmatched: Counter
    bulk_waiting: Gauge
    bulk_in_flight: Gauge
    bulk_window: Gauge
    usage_tokens: Counter
    usage_requests: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> FrontendMetrics:
        """Register the front end's metrics in ``registry``."""
        make = _Maker(registry)
        return cls(
            requests=make.counter(
                "kc_http_requests_total",
                "HTTP requests by route, model and status code",
                "route",
                "model",
                "status",
            ),
            latency=make.histogram(
                "kc_request_latency_seconds",
                "End-to-end latency of /v1/completion per model",
                LATENCY_BUCKETS,
                "model",
            ),
            in_flight=make.gauge(
                "kc_requests_in_flight", "Completion requests waiting for results"
            ),
            timeouts=make.counter(
                "kc_request_timeouts_total",
                "Requests answered 504 at their deadline, per model",
                "model",
            ),
            rejected=make.counter(
                "kc_requests_rejected_total",
                "Requests refused before reaching Kafka, by reason",
                "reason",
            ),
            results_unmatched=make.counter(
                "kc_results_unmatched_total",
                "Results on this front end's reply partition with no waiting caller",
            ),
            # Set by the front end that dispatches (the others leave them empty); a key is its
            # key id, at most KEY_LABELS of them, the rest summed under "other".
            bulk_waiting=make.gauge(
                "kc_bulk_lines_waiting",
                "Batch lines not yet handed to the bulk lanes, per API key",
                "key",
            ),
            bulk_in_flight=make.gauge(
                "kc_bulk_lines_in_flight",
                "Batch lines handed to the bulk lanes and not yet answered, per API key",
                "key",
            ),
            bulk_window=make.gauge(
                "kc_bulk_window_tasks",
                "The dispatcher's window of bulk tasks in flight, per model",
                "model",
            ),
            # Counted by the front end that writes the usage ledger, as it commits; a key is
            # its alias (else its key id), the first 100 keys counted, later ones "other".
            usage_tokens=make.counter(
                "kc_usage_tokens_total",
                "Tokens of committed results, per API key, model and kind (input, output)",
                "key",
                "model",
                "kind",
            ),
            usage_requests=make.counter(
                "kc_usage_requests_total",
                "Model requests of committed results, per API key, model and outcome (ok, failed)",
                "key",
                "model",
                "outcome",
            ),
        )


@dataclass(frozen=True, slots=True)
class WorkerMetrics:
    """Metrics of a worker process (all its models)."""

    tasks: Counter
    prompt_tokens: Counter
    completion_tokens: Counter
    queue_time: Histogram
    generation_time: Histogram
    batch_size: Histogram
    in_flight: Gauge
    dead_letters: Counter
    consumer_lag: Gauge
    vendor_retries: Counter
    vendor_throttled: Counter
    gpu_memory: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> WorkerMetrics:
        """Register the worker's metrics in ``registry``."""
        make = _Maker(registry)
        return cls(**_work_metrics(make), **_state_metrics(make))


def _work_metrics(make: _Maker) -> dict[str, Any]:
    """What the worker did: tasks, tokens and their times."""
    return dict(
        tasks=make.counter(
            "kc_worker_tasks_total", "Tasks finished per model and outcome", "model", "outcome"
        ),
        prompt_tokens=make.counter(
            "kc_worker_prompt_tokens_total", "Prompt tokens processed per model", "model"
        ),
        completion_tokens=make.counter(
            "kc_worker_completion_tokens_total",
            "Completion tokens generated per model",
            "model",
        ),
        queue_time=make.histogram(
            "kc_worker_queue_seconds",
            "From produce to the start of work, per model",
            LATENCY_BUCKETS,
            "model",
        ),
        generation_time=make.histogram(
            "kc_worker_generation_seconds",
            "Backend time per task, per model",
            LATENCY_BUCKETS,
            "model",
        ),
        batch_size=make.histogram(
            "kc_worker_batch_size",
            "Tasks handed to the backend at once, per model",
            BATCH_BUCKETS,
            "model",
        ),
    )


def _state_metrics(make: _Maker) -> dict[str, Any]:
    """Where the worker stands: in flight, lag, dead letters, vendor answers, GPU memory."""
    return dict(
        in_flight=make.gauge(
            "kc_worker_tasks_in_flight", "Tasks taken from Kafka and not yet committed", "model"
        ),
        dead_letters=make.counter(
            "kc_worker_dead_letters_total", "Records sent to the DLQ per model", "model"
        ),
        consumer_lag=make.gauge(
            "kc_worker_consumer_lag_records",
            "Records waiting in a request partition (highwater - position)",
            "model",
            "topic",
            "partition",
        ),
        vendor_retries=make.counter(
            "kc_worker_vendor_retries_total",
            "Vendor calls retried, per model and reason (status code or timeout)",
            "model",
            "reason",
        ),
        vendor_throttled=make.counter(
            "kc_worker_vendor_throttled_total", "Vendor 429 answers, per model", "model"
        ),
        gpu_memory=make.gauge(
            "kc_worker_gpu_memory_bytes",
            "CUDA memory allocated by this worker (0 without CUDA)",
        ),
    )
