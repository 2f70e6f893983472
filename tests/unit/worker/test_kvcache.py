"""The decode loop's preallocated KV cache: steps write in place, rows still decode as alone."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tests.unit.factories import sampling
from tests.unit.worker.churn import churn
from tests.unit.worker.tiny_model import tiny_llama
from worker.decode import DecodeBatch, Row

_LONG = [5, 6, 7, 8, 9, 10, 11, 12, 13]
_SHORT = [3, 4]
_MID = [20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33]


@pytest.fixture(scope="module")
def model() -> Any:
    """A two-layer Llama with random weights: fast, deterministic in float32."""
    return tiny_llama(48, 256, seed=1234)


def _batch(model: Any, **extra: Any) -> DecodeBatch:
    return DecodeBatch(model, eos=[], pad=0, decode=str, max_rows=8, token_budget=4096, **extra)


def _greedy(prompt: list[int], max_tokens: int) -> Row:
    return Row(prompt, prompt, sampling(max_tokens=max_tokens, temperature=0.0))


def _reference(model: Any, row: Row) -> list[int]:
    """What ``generate`` decodes greedily for the row's prompt alone."""
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([row.prompt]),
            max_new_tokens=row.sampling.max_tokens,
            do_sample=False,
            pad_token_id=0,
        )
    return [int(t) for t in out[0, len(row.prompt) :]]


def _attended(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Records the storage of the keys and values every attention call reads."""
    seen: list[tuple[int, int]] = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def recorded(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, **kw: Any) -> Any:
        seen.append((key.data_ptr(), value.data_ptr()))
        return sdpa(query, key, value, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recorded)
    return seen


def _steps(batch: DecodeBatch, seen: list[tuple[int, int]], n: int) -> set[tuple[Any, ...]]:
    """Each of ``n`` decode steps' attended storage (one tuple a step)."""
    storages = set()
    for _ in range(n):
        seen.clear()
        batch.step()
        storages.add(tuple(seen))
    return storages


def test_steps_write_the_cache_in_place_and_move_it_only_to_grow(
    model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = _batch(model)
    rows = [_greedy(_LONG, 30), _greedy(_SHORT, 4), _greedy(_MID, 12)]
    batch.admit(rows)
    seen = _attended(monkeypatch)
    first = _steps(batch, seen, 5)  # the short row leaves: the last row takes its slot
    batch.admit([late := _greedy(_SHORT, 6)])  # fits the room left: written in place
    assert _steps(batch, seen, 4) == first and len(first) == 1
    batch.admit([grown := _greedy(_MID, 100)])  # needs more columns: the one move
    after = _steps(batch, seen, 3)
    assert len(after) == 1 and after != first
    while batch.rows:
        batch.step()
    for row in [*rows, late, grown]:
        assert row.tokens == _reference(model, row)


def test_rows_coming_and_going_keep_the_buffers_while_they_hold_them(model: Any) -> None:
    batch = DecodeBatch(model, eos=[], pad=0, decode=str, max_rows=16, token_budget=4096)
    run = churn(batch, 5)
    cache = batch._cache
    assert cache is not None
    buffers, ends = set(), set()
    for _ in range(40):  # rows join (the live columns moving left) and leave every few steps
        run = churn(batch, 5, run=run)
        assert batch._cache is cache
        buffers.add((cache.slots[0].key_buffer.data_ptr(), cache.mask.data_ptr()))
        ends.add(cache.end)
    assert len(run.rows) > 40 and len(buffers) == 1
    assert max(ends) < cache.capacity[1]  # the columns were moved left, again and again


def test_admission_and_steps_run_on_meta_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    """No code path of the decode loop needs a tensor's values, but its one readback.

    A meta tensor has a shape and no data: any ``item``, ``int``, ``nonzero`` or ``bool`` of
    one raises. The readback (``tolist``, the sampled tokens) is stood in for by zeros.
    """
    meta = tiny_llama(600, 256, seed=7, device="meta")
    original = torch.Tensor.tolist

    def zeros(self: torch.Tensor) -> Any:
        return original(torch.zeros(self.shape, dtype=self.dtype) if self.is_meta else self)

    monkeypatch.setattr(torch.Tensor, "tolist", zeros)
    batch = DecodeBatch(meta, eos=[], pad=0, decode=str, max_rows=8, token_budget=4096)
    spec = {"temperature": 0.7, "top_p": 0.8, "presence_penalty": 0.5, "frequency_penalty": -0.5}
    rows = [Row(i, [3 + i, 4, 5], sampling(max_tokens=3 + i, **spec)) for i in range(3)]
    batch.admit([*rows, _greedy(_SHORT, 6)])
    finished = [f.row for _ in range(3) for f in batch.step()]
    batch.admit([_greedy(_MID, 4)])  # joins the running batch
    finished += [f.row for _ in range(4) for f in batch.step()]
    assert finished[:2] == rows[:2] and len(finished) == 5
