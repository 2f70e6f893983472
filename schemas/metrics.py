"""Every Prometheus metric, created against an injected registry (names are a contract).

Names are prefixed ``kc_`` and carry their unit. Labels stay bounded: a model name (from the
registry), a route, a status code, an outcome; never a request id or a key.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True, slots=True)
class FrontendMetrics:
    """Metrics of the HTTP front end."""

    requests: Counter
    latency: Histogram
    in_flight: Gauge
    timeouts: Counter
    rejected: Counter
    results_unmatched: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> FrontendMetrics:
        """Register the front end's metrics in ``registry``."""
        return cls(
            requests=Counter(
                "kc_http_requests_total",
                "HTTP requests by route, model and status code",
                ["route", "model", "status"],
                registry=registry,
            ),
            latency=Histogram(
                "kc_request_latency_seconds",
                "End-to-end latency of /v1/completion per model",
                ["model"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            in_flight=Gauge(
                "kc_requests_in_flight",
                "Completion requests waiting for results",
                registry=registry,
            ),
            timeouts=Counter(
                "kc_request_timeouts_total",
                "Requests answered 504 at their deadline, per model",
                ["model"],
                registry=registry,
            ),
            rejected=Counter(
                "kc_requests_rejected_total",
                "Requests refused before reaching Kafka, by reason",
                ["reason"],
                registry=registry,
            ),
            results_unmatched=Counter(
                "kc_results_unmatched_total",
                "Results on this front end's reply partition with no waiting caller",
                registry=registry,
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
        return cls(
            tasks=Counter(
                "kc_worker_tasks_total",
                "Tasks finished per model and outcome",
                ["model", "outcome"],
                registry=registry,
            ),
            prompt_tokens=Counter(
                "kc_worker_prompt_tokens_total",
                "Prompt tokens processed per model",
                ["model"],
                registry=registry,
            ),
            completion_tokens=Counter(
                "kc_worker_completion_tokens_total",
                "Completion tokens generated per model",
                ["model"],
                registry=registry,
            ),
            queue_time=Histogram(
                "kc_worker_queue_seconds",
                "From produce to the start of work, per model",
                ["model"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            generation_time=Histogram(
                "kc_worker_generation_seconds",
                "Backend time per task, per model",
                ["model"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            batch_size=Histogram(
                "kc_worker_batch_size",
                "Tasks handed to the backend at once, per model",
                ["model"],
                buckets=BATCH_BUCKETS,
                registry=registry,
            ),
            in_flight=Gauge(
                "kc_worker_tasks_in_flight",
                "Tasks taken from Kafka and not yet committed",
                ["model"],
                registry=registry,
            ),
            dead_letters=Counter(
                "kc_worker_dead_letters_total",
                "Records sent to the DLQ per model",
                ["model"],
                registry=registry,
            ),
            consumer_lag=Gauge(
                "kc_worker_consumer_lag_records",
                "Records waiting in a request partition (highwater - position)",
                ["model", "topic", "partition"],
                registry=registry,
            ),
            vendor_retries=Counter(
                "kc_worker_vendor_retries_total",
                "Vendor calls retried, per model and reason (status code or timeout)",
                ["model", "reason"],
                registry=registry,
            ),
            vendor_throttled=Counter(
                "kc_worker_vendor_throttled_total",
                "Vendor 429 answers, per model",
                ["model"],
                registry=registry,
            ),
            gpu_memory=Gauge(
                "kc_worker_gpu_memory_bytes",
                "CUDA memory allocated by this worker (0 without CUDA)",
                registry=registry,
            ),
        )
