"""Every catalog metric moved by what it should after known traffic, read two ways: from the
processes' own ``/metrics``, and through a real Prometheus by every query of the Grafana
dashboard (the dashboard tested against real metrics).

One scenario for the module: a front end, an echo worker and a gpt-4 worker (against the fake
OpenAI server), each process scraped by Prometheus under its job of ``deploy/prometheus.yml``.
The same round of traffic is sent twice: Prometheus starts after the first, so that every series
already exists when it first samples it and ``rate()`` over the dashboard's windows sees exactly
the second round (counters that appear mid-window lose their first increase in ``rate()``).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from devstack.process import free_port
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from schemas.keys import key_id
from schemas.metrics import BATCH_BUCKETS, LATENCY_BUCKETS
from schemas.settings import Settings
from schemas.topics import Topics
from tests.conftest import API_KEY, make_settings
from tests.fakes.vendor_server import Reply, VendorServer, vendor_server
from tests.integration.harness import front_end, wait_live, worker_process
from tests.integration.prometheus import Prometheus, prometheus

pytestmark = [pytest.mark.kafka, pytest.mark.vendor, pytest.mark.timeout(300)]
DASHBOARD = Path(__file__).parents[2] / "deploy/grafana/dashboards/kafka-completions.json"
VENDOR_KEY = "sk-fake-metrics-3c1d"
DEADLINE_S = 2.0
SLOW_S = 4.0  # the fake vendor's answer to the calls that must miss their deadline
ECHO = {"prompt": "one two three", "model": ["echo", "echo"], "max_tokens": 5}
GPT = {"prompt": "one two three", "model": "gpt-4", "max_tokens": 5}
ROUTE = "/v1/completion"

# What one round sends, as the front end must count it (route /v1/completion) ...
STATUSES = {"200": 4, "504": 2, "429": 1, "401": 1, "404": 1, "422": 1}
ANSWERED = {"echo": 3, "gpt-4": 3}  # requests that reached Kafka: 200s and 504s, per model
# ... and as the workers must: echo runs 3 pairs and dead-letters 2 records; gpt-4 runs 3 tasks
# (the two slow ones finish after their callers' 504) after one 429 answer retried once.
TASKS = {("echo", "done"): 6, ("echo", "dead_lettered"): 2, ("gpt-4", "done"): 3}
GARBAGE = 2
SAMPLED_S = 20.0
RATE_SLACK = 1.25


@dataclass
class Round:
    """What one round of traffic got back."""

    statuses: Counter[str] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    prompt_tokens: Counter[str] = field(default_factory=Counter)
    completion_tokens: Counter[str] = field(default_factory=Counter)

    def add(self, model: str, status: int, elapsed: float, body: dict[str, Any]) -> None:
        self.statuses[str(status)] += 1
        self.latencies.setdefault(model, []).append(elapsed)
        if status == 200:
            self.prompt_tokens[model] += body["usage"]["prompt_tokens"]
            self.completion_tokens[model] += body["usage"]["completion_tokens"]


@dataclass
class Observed:
    """The scenario's outcome: both rounds, the final scrapes, every dashboard query's answer."""

    rounds: list[Round]
    front: dict[str, float]
    workers: dict[str, float]  # both workers' samples (their model labels keep them apart)
    per_worker: list[dict[str, float]]
    dashboard: dict[str, list[dict[str, Any]]]


def samples(exposition: str) -> dict[str, float]:
    """Every sample of a scrape keyed as ``name{label="value",...}`` (labels sorted)."""
    found = {}
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            found[f"{s.name}{{{labels}}}"] = s.value
    return found


def dashboard_exprs() -> list[str]:
    """Every query of every panel of the provisioned dashboard."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p["targets"]]


async def _post(client: httpx.AsyncClient, body: dict[str, Any], **kw: Any) -> httpx.Response:
    return await client.post(ROUTE, json=body, **kw)


async def _timed(
    client: httpx.AsyncClient, body: dict[str, Any], seen: Round, model: str
) -> httpx.Response:
    started = time.monotonic()
    response = await _post(client, body)
    seen.add(model, response.status_code, time.monotonic() - started, response.json())
    return response


async def _until(check: Callable[[], Any], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"still waiting for {what} after {timeout_s} s"
        await asyncio.sleep(0.1)


async def _scrape(url: str) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=10) as client:
        return samples((await client.get(url)).text)


async def _slow_and_overloaded(client: httpx.AsyncClient, fake: VendorServer, seen: Round) -> None:
    """Two gpt-4 callers time out (504) while holding KC_MAX_IN_FLIGHT; a third gets 429."""
    asked = len(fake.requests_to("/chat/completions"))
    fake.script(Reply(delay_s=SLOW_S), Reply(delay_s=SLOW_S))
    slow = [asyncio.create_task(_timed(client, GPT, seen, "gpt-4")) for _ in range(2)]

    async def both_waiting() -> bool:
        front = samples((await client.get("/metrics")).text)
        return front["kc_requests_in_flight{}"] == 2

    await _until(both_waiting, "two requests in flight")
    overloaded = await _post(client, ECHO)
    seen.statuses[str(overloaded.status_code)] += 1
    assert overloaded.status_code == 429, overloaded.text
    assert [(await s).status_code for s in slow] == [504, 504]

    async def vendor_done() -> bool:
        reached = len(fake.requests_to("/chat/completions")) - asked
        return reached == 2 and fake.in_flight == 0

    await _until(vendor_done, "the slow vendor calls to end")


async def _one_round(client: httpx.AsyncClient, fake: VendorServer, settings: Settings) -> Round:
    seen = Round()
    await _slow_and_overloaded(client, fake, seen)
    for _ in range(3):
        assert (await _timed(client, ECHO, seen, "echo")).status_code == 200
    refused = [
        await _post(client, ECHO, headers={"Authorization": "Bearer wrong"}),
        await _post(client, ECHO | {"temperature": 7.0}),
        await _post(client, ECHO | {"model": "no-such-model"}),
    ]
    assert [r.status_code for r in refused] == [401, 422, 404]
    seen.statuses.update(str(r.status_code) for r in refused)
    fake.script(Reply(status=429, headers={"Retry-After": "0"}))
    assert (await _timed(client, GPT, seen, "gpt-4")).status_code == 200
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for i in range(GARBAGE):
            await producer.send_and_wait(
                Topics(settings.topic_prefix).requests("echo"), b"\x00%d" % i
            )
    finally:
        await producer.stop()
    return seen


def _tasks_settled(rounds: int) -> float:
    return rounds * sum(TASKS.values())


async def _settled(worker_urls: list[str], rounds: int) -> None:
    """Wait until the workers have counted every task of ``rounds`` rounds."""

    async def counted() -> bool:
        total = 0.0
        for url in worker_urls:
            scraped = await _scrape(url)
            total += sum(v for k, v in scraped.items() if k.startswith("kc_worker_tasks_total{"))
        return total == _tasks_settled(rounds)

    await _until(counted, f"the workers to count {_tasks_settled(rounds):g} tasks")


@pytest.fixture(scope="module")
async def observed(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Observed]:
    """Run the scenario once for the module's tests."""
    workdir = tmp_path_factory.mktemp("metrics")
    with vendor_server(VENDOR_KEY) as fake:
        settings = make_settings(
            kafka_bootstrap,
            request_timeout_s=DEADLINE_S,
            max_in_flight=2,
            openai_api_key=SecretStr(VENDOR_KEY),
            openai_base_url=fake.openai_url,
        )
        ports = {"worker-local": free_port(), "worker-openai": free_port()}
        vendor_env = {"OPENAI_API_KEY": VENDOR_KEY, "OPENAI_BASE_URL": fake.openai_url}
        procs = [
            worker_process(
                settings, "echo", env={"KC_WORKER_METRICS_PORT": str(ports["worker-local"])}
            ),
            worker_process(
                settings,
                "gpt-4",
                env={"KC_WORKER_METRICS_PORT": str(ports["worker-openai"]), **vendor_env},
            ),
        ]
        worker_urls = [f"http://127.0.0.1:{p}/metrics" for p in ports.values()]
        try:
            async with front_end(settings) as client:
                await wait_live(client, "echo", "gpt-4")
                ports["frontend"] = int(str(client.base_url).rsplit(":", 1)[1])
                rounds = [await _one_round(client, fake, settings)]
                await _settled(worker_urls, 1)
                async with prometheus(ports, workdir) as prom:
                    started = time.monotonic()
                    await _caught_up(prom, 1)
                    rounds.append(await _one_round(client, fake, settings))
                    await _settled(worker_urls, 2)
                    await _caught_up(prom, 2)
                    # rate() extrapolates past the first and last samples by up to ~2.5 scrape
                    # intervals: over >= SAMPLED_S of samples that stays within RATE_SLACK.
                    await asyncio.sleep(max(0.0, SAMPLED_S - (time.monotonic() - started)))
                    dashboard = {e: await prom.query(e) for e in dashboard_exprs()}
                front = samples((await client.get("/metrics")).text)
                per_worker = [await _scrape(url) for url in worker_urls]
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(30)
    workers = {k: v for scraped in per_worker for k, v in scraped.items()}
    yield Observed(rounds, front, workers, per_worker, dashboard)


async def _caught_up(prom: Prometheus, rounds: int) -> None:
    """Wait until Prometheus's latest samples hold every request and task of ``rounds``."""
    await prom.wait_for(
        f'kc_http_requests_total{{route="{ROUTE}"}}', rounds * sum(STATUSES.values())
    )
    await prom.wait_for("kc_worker_tasks_total", _tasks_settled(rounds))
    # The usage ledger's writer counts the committed results: 6 echo choices (each its own
    # prompt) and 3 gpt-4 requests a round.
    await prom.wait_for("kc_usage_requests_total", rounds * 9)
    up = await prom.targets_up()
    assert up == dict.fromkeys(["frontend", "worker-local", "worker-openai"], True), up


# --- the processes' own /metrics, after both rounds -------------------------------------------


def _by_label(scraped: dict[str, float], name: str, label: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for key, value in scraped.items():
        if key.startswith(name + "{") and (m := re.search(rf'{label}="([^"]*)"', key)):
            found[m.group(1)] = found.get(m.group(1), 0) + value
    return found


def _route_samples(scraped: dict[str, float]) -> dict[str, float]:
    mine = {k: v for k, v in scraped.items() if f'route="{ROUTE}"' in k}
    return _by_label(mine, "kc_http_requests_total", "status")


def test_request_counts_per_status_equal_the_requests_sent(observed: Observed) -> None:
    sent: Counter[str] = sum((r.statuses for r in observed.rounds), Counter())
    assert sent == Counter({s: 2 * n for s, n in STATUSES.items()})
    assert _route_samples(observed.front) == {s: float(n) for s, n in sent.items()}


def test_latency_histogram_counts_the_answered_requests(observed: Observed) -> None:
    counts = _by_label(observed.front, "kc_request_latency_seconds_count", "model")
    assert counts == {m: 2.0 * n for m, n in ANSWERED.items()}
    sums = _by_label(observed.front, "kc_request_latency_seconds_sum", "model")
    # The two 504s of each round waited for their deadline; the sum shows them.
    assert sums["gpt-4"] >= 4 * DEADLINE_S * 0.95
    longest = max(t for r in observed.rounds for t in r.latencies["gpt-4"])
    assert sums["gpt-4"] <= 6 * longest


def test_in_flight_is_back_to_zero(observed: Observed) -> None:
    assert observed.front["kc_requests_in_flight{}"] == 0
    assert _by_label(observed.workers, "kc_worker_tasks_in_flight", "model") == {
        "echo": 0.0,
        "gpt-4": 0.0,
    }


def test_a_504_is_counted_as_a_timeout_and_a_429_as_a_rejection(observed: Observed) -> None:
    assert _by_label(observed.front, "kc_request_timeouts_total", "model") == {"gpt-4": 4.0}
    assert _by_label(observed.front, "kc_requests_rejected_total", "reason") == {"overloaded": 2.0}
    # The late results of the timed-out requests reached a front end nobody waited on.
    assert observed.front["kc_results_unmatched_total{}"] == 4


def test_tasks_by_outcome_and_dead_letters(observed: Observed) -> None:
    tasks = {
        (m, o): v
        for k, v in observed.workers.items()
        if k.startswith("kc_worker_tasks_total{")
        for m, o in re.findall(r'model="([^"]*)",outcome="([^"]*)"', k)
    }
    assert tasks == {key: 2.0 * n for key, n in TASKS.items()}
    assert _by_label(observed.workers, "kc_worker_dead_letters_total", "model") == {
        "echo": 2.0 * GARBAGE
    }


def test_tokens_equal_the_usage_returned(observed: Observed) -> None:
    for name, attr in [("prompt", "prompt_tokens"), ("completion", "completion_tokens")]:
        counted = _by_label(observed.workers, f"kc_worker_{name}_tokens_total", "model")
        returned: Counter[str] = sum((getattr(r, attr) for r in observed.rounds), Counter())
        assert counted["echo"] == returned["echo"] > 0
        # gpt-4's two timed-out tasks ran too (their usage reached nobody): the fake vendor
        # answers the same body with the same usage, so each counts what the answered one got.
        assert counted["gpt-4"] == 3 * returned["gpt-4"] > 0


def test_queue_generation_and_batch_histograms(observed: Observed) -> None:
    ran = {m: sum(n for (mm, o), n in TASKS.items() if mm == m and o == "done") for m in ANSWERED}
    for metric in ("kc_worker_queue_seconds", "kc_worker_generation_seconds"):
        counts = _by_label(observed.workers, metric + "_count", "model")
        assert counts == {m: 2.0 * n for m, n in ran.items()}, metric
    generation = _by_label(observed.workers, "kc_worker_generation_seconds_sum", "model")
    assert generation["gpt-4"] >= 4 * SLOW_S * 0.95, "the slow vendor calls took 4 s each"
    assert generation["echo"] < 1
    sizes = _by_label(observed.workers, "kc_worker_batch_size_sum", "model")
    assert sizes == {m: 2.0 * n for m, n in ran.items()}, "every task was handed over once"
    batches = _by_label(observed.workers, "kc_worker_batch_size_count", "model")
    assert all(1 <= batches[m] <= sizes[m] for m in ran), batches


def test_vendor_429s_and_retries_and_gpu_memory(observed: Observed) -> None:
    assert _by_label(observed.workers, "kc_worker_vendor_throttled_total", "model") == {
        "gpt-4": 2.0
    }
    retries = {k: v for k, v in observed.workers.items() if "vendor_retries_total{" in k}
    assert retries == {'kc_worker_vendor_retries_total{model="gpt-4",reason="rate_limited"}': 2.0}
    gpu = [w["kc_worker_gpu_memory_bytes{}"] for w in observed.per_worker]
    assert gpu == [0.0, 0.0], "one gauge per worker, 0 without CUDA"


def test_lag_reads_zero_on_every_request_partition(observed: Observed) -> None:
    lag = {k: v for k, v in observed.workers.items() if k.startswith("kc_worker_consumer_lag")}
    # 2 partitions each of the interactive and the bulk topic, for both models, all drained.
    assert len(lag) == 8, lag
    assert set(lag.values()) == {0.0}


# --- the dashboard through Prometheus, after the second round ---------------------------------


def _key(metric: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(metric.items()))


def _window_s(expr: str) -> float:
    found = re.findall(r"\[(\d+)m\]", expr)
    assert len(found) == 1, expr
    return 60.0 * int(found[0])


def _increases(expr: str, result: list[dict[str, Any]]) -> dict[str, float]:
    """A rate query's answer as the increase over its window, keyed by its labels."""
    window = _window_s(expr)
    return {_key(r["metric"]): float(r["value"][1]) * window for r in result}


def _below(value: float, bound: float, buckets: tuple[float, ...]) -> bool:
    """Whether a quantile ``value`` lies below ``bound``'s bucket or the one above it."""
    # Each bucket series is extrapolated by rate() on its own (by how far from zero it began),
    # so a quantile can land one bucket higher than every observation: allow that bucket.
    at = next(i for i, b in enumerate(buckets) if b >= bound)
    return value <= buckets[min(at + 1, len(buckets) - 1)]


RATES: dict[str, dict[str, float]] = {
    'sum by (status) (rate(kc_http_requests_total{route="/v1/completion"}[1m]))': {
        f"status={s}": n for s, n in STATUSES.items()
    },
    "sum by (model, outcome) (rate(kc_worker_tasks_total[1m]))": {
        f"model={m},outcome={o}": n for (m, o), n in TASKS.items()
    },
    'sum by (status) (rate(kc_http_requests_total{status=~"5.."}[1m]))': {"status=504": 2},
    'sum by (model, outcome) (rate(kc_worker_tasks_total{outcome!="done"}[1m]))': {
        "model=echo,outcome=dead_lettered": GARBAGE
    },
    "sum by (model) (rate(kc_worker_dead_letters_total[5m]))": {"model=echo": GARBAGE},
    "sum by (model) (rate(kc_request_timeouts_total[5m]))": {"model=gpt-4": 2},
    "sum by (reason) (rate(kc_requests_rejected_total[5m]))": {"reason=overloaded": 1},
    "sum by (model) (rate(kc_worker_vendor_throttled_total[5m]))": {"model=gpt-4": 1},
    "sum by (model, reason) (rate(kc_worker_vendor_retries_total[5m]))": {
        "model=gpt-4,reason=rate_limited": 1
    },
}
GAUGES_AT_ZERO = {
    "sum by (model) (kc_worker_consumer_lag_records)": {"model=echo", "model=gpt-4"},
    "sum(kc_requests_in_flight)": {""},
    "sum by (model) (kc_worker_tasks_in_flight)": {"model=echo", "model=gpt-4"},
    # No batch ran: the dispatching front end shows only its "other" row, at 0 (a key's own
    # rows while its batch runs: tests/integration/test_dispatch.py).
    "sum by (key) (kc_bulk_lines_waiting)": {"key=other"},
    "sum by (key) (kc_bulk_lines_in_flight)": {"key=other"},
}


def test_every_dashboard_query_returns_data(observed: Observed) -> None:
    empty = [expr for expr, result in observed.dashboard.items() if not result]
    assert not empty, f"dashboard queries with no data in Prometheus: {empty}"
    checked = set(RATES) | set(GAUGES_AT_ZERO) | {e for e in observed.dashboard if "quantile" in e}
    checked |= {e for e in observed.dashboard if "tokens_total" in e or "gpu_memory" in e}
    assert checked == set(observed.dashboard), "a dashboard query no test checks"


@pytest.mark.parametrize("expr", sorted(RATES))
def test_dashboard_rates_agree_with_the_second_round(observed: Observed, expr: str) -> None:
    increases = _increases(expr, observed.dashboard[expr])
    expected = RATES[expr]
    for key, n in expected.items():
        # rate() extrapolates a little past the first and last samples, never less.
        assert n * 0.99 <= increases.get(key, 0.0) <= n * RATE_SLACK, (key, n, increases)
    assert all(v == 0 for k, v in increases.items() if k not in expected), increases


def test_dashboard_token_rates_agree_with_the_usage_returned(observed: Observed) -> None:
    second = observed.rounds[1]
    for name, returned in [
        ("completion", second.completion_tokens),
        ("prompt", second.prompt_tokens),
    ]:
        expr = f"sum by (model) (rate(kc_worker_{name}_tokens_total[1m]))"
        increases = _increases(expr, observed.dashboard[expr])
        expected = {"model=echo": returned["echo"], "model=gpt-4": 3 * returned["gpt-4"]}
        for key, n in expected.items():
            assert n * 0.99 <= increases[key] <= n * RATE_SLACK, (name, key, n, increases)


def test_dashboard_tokens_per_key_agree_with_the_committed_results(observed: Observed) -> None:
    second = observed.rounds[1]
    # The ledger counts the two gpt-4 calls whose callers got a 504 too: the work was done.
    told = {m: second.prompt_tokens[m] + second.completion_tokens[m] for m in ANSWERED}
    expected = told["echo"] + 3 * told["gpt-4"]
    expr = "sum by (key) (rate(kc_usage_tokens_total[1m]))"
    increases = _increases(expr, observed.dashboard[expr])
    assert set(increases) == {f"key={key_id(API_KEY)}"}, increases  # a static key: its id
    assert expected * 0.99 <= increases[f"key={key_id(API_KEY)}"] <= expected * RATE_SLACK


def test_dashboard_gauges_read_zero_after_the_traffic(observed: Observed) -> None:
    for expr, keys in GAUGES_AT_ZERO.items():
        got = {_key(r["metric"]): float(r["value"][1]) for r in observed.dashboard[expr]}
        assert got == dict.fromkeys(keys, 0.0), expr
    gpu = observed.dashboard["sum by (instance) (kc_worker_gpu_memory_bytes)"]
    assert len(gpu) == 2 and all(float(r["value"][1]) == 0 for r in gpu), "no CUDA here"


def _quantiles(observed: Observed, metric: str) -> dict[str, dict[str, float]]:
    """Each quantile query of ``metric``: the value per model."""
    found = {}
    for expr, result in observed.dashboard.items():
        if f"({metric}_bucket[" in expr:
            q = re.match(r"histogram_quantile\(([0-9.]+)", expr)
            assert q, expr
            found[q.group(1)] = {r["metric"]["model"]: float(r["value"][1]) for r in result}
    assert found, metric
    return found


def test_dashboard_latency_quantiles_agree_with_what_callers_waited(observed: Observed) -> None:
    second = observed.rounds[1]
    for quantile, values in _quantiles(observed, "kc_request_latency_seconds").items():
        assert set(values) == set(ANSWERED), quantile
        for model, value in values.items():
            longest = max(second.latencies[model])
            assert value > 0 and _below(value, longest, LATENCY_BUCKETS), (quantile, model, value)
    # A third of gpt-4's answers is fast, two thirds waited for the 2 s deadline.
    assert _quantiles(observed, "kc_request_latency_seconds")["0.99"]["gpt-4"] >= 1.0


def test_dashboard_worker_quantiles_agree_with_the_work(observed: Observed) -> None:
    for values in _quantiles(observed, "kc_worker_batch_size").values():
        assert set(values) == set(ANSWERED)
        assert all(v >= 1 and _below(v, 6, BATCH_BUCKETS) for v in values.values()), values
    generation = _quantiles(observed, "kc_worker_generation_seconds")["0.95"]
    assert generation["gpt-4"] >= 2.5, "two of three vendor calls took 4 s"
    assert _below(generation["gpt-4"], SLOW_S, LATENCY_BUCKETS)
    assert generation["echo"] > 0 and _below(generation["echo"], 0.001, LATENCY_BUCKETS)
    queue = _quantiles(observed, "kc_worker_queue_seconds")["0.95"]
    assert all(0 < v <= DEADLINE_S for v in queue.values()), queue
    assert not any(math.isnan(v) for q in (generation, queue) for v in q.values())
