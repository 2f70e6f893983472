"""``KC_TORCH_COMPILE``: the decode step compiled once per row bucket, and the eager tokens."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch._dynamo.utils import counters

from schemas.registry import load_registry
from tests.conftest import cache_dir
from tests.unit.factories import sampling
from tests.unit.worker.churn import NUCLEUS, churn, drain
from tests.unit.worker.tiny_model import tiny_llama
from worker.decode import DecodeBatch, Row
from worker.forward import StepMode
from worker.weights import load_weights

_PROMPTS = ([5, 6, 7, 8, 9], [3, 4])


@pytest.fixture(scope="module")
def model() -> Any:
    """A two-layer Llama with random weights: fast, deterministic in float32."""
    return tiny_llama(48, 256, seed=1234)


def _batch(model: Any, mode: StepMode) -> DecodeBatch:
    return DecodeBatch(model, eos=[], pad=0, decode=str, max_rows=16, token_budget=4096, mode=mode)


def _graphs() -> int:
    return int(counters["stats"]["unique_graphs"])


@pytest.mark.timeout(120)
def test_rows_coming_and_going_inside_a_bucket_compile_nothing_more(model: Any) -> None:
    # aot_eager traces what inductor would compile (the cache writes made functional and
    # written back) without generating C++: seconds, not a minute a graph, on two cores.
    torch._dynamo.reset()
    counters.clear()
    batch = _batch(model, StepMode(compiled="aot_eager"))
    run = churn(batch, 10)  # warm-up: the 16-row bucket at the cache's one width
    warm = _graphs()
    run = churn(batch, 200, run=run)
    assert _graphs() == warm == 1  # 200 steps, no recompilation
    # Rows did come and go, and every step ran in the bucket of 13 to 16 rows.
    assert len(set(run.live)) >= 3 and set(run.live) <= {13, 14, 15, 16}
    assert len(run.rows) > 100
    assert not counters["graph_break"]
    drain(batch)
    eager = _batch(model, StepMode())
    again = churn(eager, 210)
    drain(eager)
    assert run.tokens() == again.tokens()  # greedy: the eager tokens, row for row


@pytest.mark.timeout(120)
def test_a_compiled_step_samples_the_eager_tokens_under_a_seed(model: Any) -> None:
    torch._dynamo.reset()
    runs = []
    for mode in (StepMode(compiled="aot_eager"), StepMode()):
        batch = _batch(model, mode)
        run = churn(batch, 40, params=NUCLEUS)
        drain(batch)
        runs.append(run.tokens())
    assert runs[0] == runs[1]


@pytest.mark.timeout(120)
def test_a_shape_compiles_once_whatever_rows_step_at_it(model: Any) -> None:
    torch._dynamo.reset()
    counters.clear()
    batch = _batch(model, StepMode(compiled="aot_eager"))
    for live in (1, 2, 3, 5, 7, 8, 6, 1, 11, 14, 16, 4, 2):
        rows = [Row(i, [3 + i, 4], sampling(max_tokens=2, temperature=0.0)) for i in range(live)]
        batch.admit(rows)
        drain(batch)
    # A shape is a row bucket and the cache's buffers (rows x width, one width here): 1 on 1,
    # 2 on 2, 3 on 4, 6 on 8 (5 and 6 rows), 8 on 8 (7 and 8), 1 on 8, then 12, 16, 4 and 2
    # on 16: ten, past dynamo's default limit of eight recompilations.
    assert _graphs() == 10


@pytest.mark.model
@pytest.mark.timeout(240)
def test_smollm2_compiled_at_a_padded_bucket_decodes_the_eager_tokens() -> None:
    spec = load_registry().get("smollm2-135m-instruct")
    smollm2, _ = load_weights(spec, cache_dir(), torch.device("cpu"), "sdpa")
    torch._dynamo.reset()
    runs = []
    for mode in (StepMode(compiled="aot_eager"), StepMode()):
        batch = DecodeBatch(
            smollm2.eval(), eos=[], pad=0, decode=str, max_rows=8, token_budget=4096, mode=mode
        )
        # Five rows step at the bucket of six: one padding row in every compiled step.
        greedy = [
            Row(i, [1, 9690 + i, 198, 2000 + 7 * i], sampling(max_tokens=12, temperature=0.0))
            for i in range(3)
        ]
        sampled = [
            Row(i, [1, 9690 + i, 198, 3000 + 7 * i], sampling(max_tokens=12, **NUCLEUS), seed=i)
            for i in range(3, 5)
        ]
        batch.admit([*greedy, *sampled])
        drain(batch)
        runs.append([r.tokens for r in [*greedy, *sampled]])
    assert runs[0] == runs[1]


def _tokens(model: Any, compiled: str | None) -> list[list[int]]:
    """Two greedy rows decoded together until they finish (together: one batch shape)."""
    batch = _batch(model, StepMode(compiled=compiled))
    rows = [Row(p, p, sampling(max_tokens=8, temperature=0.0)) for p in _PROMPTS]
    batch.admit(rows)
    drain(batch)
    return [r.tokens for r in rows]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_inductor_compiled_step_decodes_the_eager_tokens(model: Any) -> None:
    torch._dynamo.reset()
    assert _tokens(model, "inductor") == _tokens(model, None)  # ~45 s of compiling on 2 cores
