"""``KC_TORCH_COMPILE``: the decode step compiled, one graph for a steady batch, same tokens."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch._dynamo.utils import counters

from tests.unit.factories import sampling
from tests.unit.worker.tiny_model import tiny_llama
from worker.decode import DecodeBatch, Row

_PROMPTS = ([5, 6, 7, 8, 9], [3, 4])


@pytest.fixture(scope="module")
def model() -> Any:
    """A two-layer Llama with random weights: fast, deterministic in float32."""
    return tiny_llama(48, 256, seed=1234)


def _tokens(model: Any, compiled: str | None) -> list[list[int]]:
    """Two greedy rows decoded together until they finish (together: one batch shape)."""
    batch = DecodeBatch(
        model, eos=[], pad=0, decode=str, max_rows=8, token_budget=4096, compiled=compiled
    )
    rows = [Row(p, p, sampling(max_tokens=8, temperature=0.0)) for p in _PROMPTS]
    batch.admit(rows)
    while batch.rows:
        batch.step()
    return [r.tokens for r in rows]


@pytest.mark.timeout(60)
def test_a_compiled_decode_step_is_one_graph_and_decodes_the_eager_tokens(model: Any) -> None:
    # aot_eager traces what inductor would compile (the cache writes made functional and
    # written back) without generating C++: seconds, not a minute, on two cores.
    torch._dynamo.reset()
    counters.clear()
    assert _tokens(model, "aot_eager") == _tokens(model, None)
    assert counters["stats"]["unique_graphs"] == 1  # steps as the cache grows: no recompile
    assert not counters["graph_break"]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_inductor_compiled_step_decodes_the_eager_tokens(model: Any) -> None:
    torch._dynamo.reset()
    assert _tokens(model, "inductor") == _tokens(model, None)  # ~45 s of compiling on 2 cores
