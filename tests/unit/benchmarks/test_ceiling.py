"""The forward passes alone (B1's ceiling), the profile by phase, and the ratios B1 prints."""

from __future__ import annotations

import time
from typing import Any

import pytest

from benchmarks.admission import kafka_shares
from benchmarks.ceiling import SYSTEM, Ceiling
from benchmarks.phases import Phases
from benchmarks.run import ratios
from benchmarks.stats import Run
from tests.unit.factories import sampling
from tests.unit.worker.tiny_model import tiny_llama
from worker.decode import DecodeBatch, Row
from worker.forward import StepMode
from worker.graphs import GraphedStep


@pytest.fixture(scope="module")
def model() -> Any:
    """A two-layer Llama with random weights."""
    return tiny_llama(48, 256, seed=1234)


def test_the_ceiling_runs_every_prompt_in_waves_over_one_cache(model: Any) -> None:
    prompts = [[3 + i, 4, 5][: 1 + i % 3] for i in range(7)]
    ceiling = Ceiling(model, 3, StepMode(graphs=True))
    run = ceiling.run(prompts, 5).summary()
    assert run["system"] == SYSTEM and run["load"] == "c=3"
    assert run["requests"] == 7 and run["tokens_per_s"] > 0
    step = ceiling._step
    assert isinstance(step, GraphedStep)
    # Waves of 3, 3 and 1 rows: two buckets, on the one cache the waves share.
    assert step.captures == 2


def test_the_profile_splits_the_loop_into_phases(model: Any) -> None:
    batch = DecodeBatch(model, eos=[], pad=0, decode=str, max_rows=8, token_budget=4096)
    phases = Phases(batch)
    rows = [Row(i, [3 + i, 4], sampling(max_tokens=6, temperature=0.7)) for i in range(4)]
    began = time.perf_counter()
    batch.admit(rows)
    while batch.rows:
        batch.step()
    shares = phases.shares(time.perf_counter() - began)
    assert set(shares) == {"prefill", "forward", "sampling", "bookkeeping", "outside_batch"}
    assert all(shares[p] > 0 for p in ("prefill", "forward", "sampling", "bookkeeping"))
    assert shares["outside_batch"] >= 0 and abs(sum(shares.values()) - 1) < 0.01
    assert all(len(r.tokens) == 6 for r in rows)


def _summary(system: str, load: str, tokens_per_s: float) -> dict[str, Any]:
    return {"benchmark": "B1", "system": system, "load": load, "tokens_per_s": tokens_per_s}


def test_b1_ratios_give_each_system_its_share_of_the_ceiling() -> None:
    summaries = [
        _summary(SYSTEM, "c=1", 40.0),
        _summary(SYSTEM, "c=32", 400.0),
        _summary("naive generate", "c=1 nucleus", 20.0),
        _summary("transformers serve --cb", "c=32 nucleus", 160.0),
        _summary("ours (HTTP+Kafka)", "c=1 nucleus", 30.0),
        _summary("ours (HTTP+Kafka)", "c=32 nucleus", 340.0),
    ]
    by_load = {r["load"]: r for r in ratios(summaries)}
    assert by_load["c=32 nucleus"]["ours_of_ceiling"] == 0.85
    assert by_load["c=32 nucleus"]["serve_of_ceiling"] == 0.4
    assert by_load["c=1 nucleus"]["naive_of_ceiling"] == 0.5
    assert by_load["c=1 nucleus"]["serve_of_ceiling"] is None  # serve did not run at c=1


def test_the_kafka_share_is_what_the_service_adds_to_the_loop() -> None:
    def run(name: str, params: str, tokens: int) -> Run:
        done = Run(name, "ours", f"c=32 {params}", tokens=tokens, elapsed_s=1.0)
        done.ok(1.0, 0)
        return done

    loop = [run("B1-loop", "plain", 200), run("B1-loop", "plain", 300)]
    served = [run("B1", "plain", 200)]
    assert kafka_shares(loop, served) == {"plain": 0.2}
