"""CUDA graphs of the decode step, on CPU: the eager stand-in replays on the static buffers.

A CUDA graph replays on the memory it was captured on; the stand-in replays by running the
step again on the same buffers, so a step whose input did not reach the static buffers (or a
graph kept past its cache's buffers) decodes wrong tokens here too.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch

from tests.unit.factories import sampling
from tests.unit.worker.churn import NUCLEUS, churn, drain, same_rows
from tests.unit.worker.tiny_model import tiny_llama
from worker.decode import DecodeBatch, Row
from worker.forward import StepMode, step_mode
from worker.graphs import GraphedStep


@pytest.fixture(scope="module")
def model() -> Any:
    """A two-layer Llama with random weights: fast, deterministic in float32."""
    return tiny_llama(48, 256, seed=1234)


def _batch(model: Any, mode: StepMode) -> DecodeBatch:
    return DecodeBatch(model, eos=[], pad=0, decode=str, max_rows=16, token_budget=4096, mode=mode)


def _captures(batch: DecodeBatch) -> int:
    step = batch._step
    assert isinstance(step, GraphedStep)
    return step.captures


def test_graphed_steps_decode_the_eager_tokens_with_one_capture(model: Any) -> None:
    batch = _batch(model, StepMode(graphs=True))
    run = churn(batch, 200)
    # One bucket (13-16 rows), one cache: the batch's moves left stay in the same buffers.
    assert _captures(batch) == 1
    drain(batch)
    eager = _batch(model, StepMode())
    again = churn(eager, 200)
    drain(eager)
    assert run.tokens() == again.tokens()


def test_graphs_with_the_late_readback_sample_the_eager_tokens(model: Any) -> None:
    runs = []
    for mode in (StepMode(graphs=True, overlap=True), StepMode()):
        batch = _batch(model, mode)
        run = churn(batch, 60, params=NUCLEUS)
        drain(batch)
        runs.append(run.tokens())
    assert same_rows(*runs)


def test_a_cache_that_grows_is_captured_again(model: Any) -> None:
    batch = _batch(model, StepMode(graphs=True))
    batch.admit([Row(0, [3, 4], sampling(max_tokens=40, temperature=0.0))])
    for _ in range(3):
        batch.step()
    assert _captures(batch) == 1
    # 100 new tokens do not fit the 64 columns of the cache: new buffers, a new capture.
    late = Row(1, [5, 6, 7], sampling(max_tokens=100, temperature=0.0))
    batch.admit([late])
    batch.step()
    assert _captures(batch) == 2
    drain(batch)
    alone = _batch(model, StepMode())
    again = Row(1, [5, 6, 7], sampling(max_tokens=100, temperature=0.0))
    alone.admit([again])
    drain(alone)
    assert late.tokens == again.tokens


def test_graphs_and_the_late_readback_need_cuda(caplog: pytest.LogCaptureFixture) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    with caplog.at_level(logging.WARNING, logger="worker.forward"):
        assert step_mode(False, True, cpu) == StepMode()
    assert "KC_CUDA_GRAPHS needs a CUDA device" in caplog.text
    assert step_mode(True, True, cpu) == StepMode(compiled="inductor")
    assert step_mode(False, True, cuda) == StepMode(graphs=True, overlap=True)
    assert step_mode(True, False, cuda) == StepMode(compiled="inductor")
    assert not StepMode().padded and StepMode(graphs=True).padded
