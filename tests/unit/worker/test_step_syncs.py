"""A decode step asks the device one thing, its tokens: counted under a dispatch mode.

On a GPU every host synchronisation stalls the launch queue; on CPU they cannot be timed, but
they can be counted: the ops that read a value back (``_local_scalar_dense`` behind ``item``,
``bool`` and ``int``; ``nonzero``, whose output size depends on values) and ``tolist`` calls.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tests.unit.factories import sampling
from tests.unit.worker.tiny_model import tiny_llama
from worker.decode import DecodeBatch, Row

_READBACKS = {"_local_scalar_dense", "nonzero", "is_nonzero", "equal", "masked_select", "unique"}


class _Ops(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Counts every aten op dispatched (launches, on a GPU) and the readbacks among them."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))

    @property
    def readbacks(self) -> int:
        return sum(n for op, n in self.ops.items() if op in _READBACKS)


@pytest.fixture(scope="module")
def model() -> Any:
    """A two-layer Llama whose vocabulary is larger than the nucleus's candidates."""
    tiny = tiny_llama(600, 256, seed=7)
    with torch.no_grad():
        tiny.lm_head.weight.mul_(40.0)  # peaked logits, as a trained model's: small nuclei
    return tiny.eval()


def _tolist_counter(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    original = torch.Tensor.tolist

    def counted(self: torch.Tensor) -> Any:
        calls[0] += 1
        return original(self)

    monkeypatch.setattr(torch.Tensor, "tolist", counted)
    return calls


def _spec_rows(lengths: list[int]) -> list[Row]:
    spec = {"temperature": 0.7, "top_p": 0.8, "presence_penalty": 0.5, "frequency_penalty": -0.5}
    rows = []
    for i, n in enumerate(lengths):
        params = sampling(max_tokens=n, stop=("\x00never",), **spec)
        rows.append(Row(i, [3 + i, 4, 5, 6], params, seed=i))
    rows.append(Row("plain", [9, 8, 7], sampling(max_tokens=12, temperature=0.7, top_p=1.0)))
    rows.append(Row("greedy", [9, 8], sampling(max_tokens=12, temperature=0.0)))
    return rows


def test_each_step_reads_back_once_even_when_rows_finish(
    model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = DecodeBatch(
        model,
        eos=[],
        pad=0,
        decode=lambda t: "".join(chr(65 + x % 26) for x in t),
        max_rows=8,
        token_budget=4096,
    )
    batch.admit(_spec_rows([3, 5, 12, 12]))
    calls = _tolist_counter(monkeypatch)
    finished = 0
    for _ in range(6):
        before = calls[0]
        with _Ops() as ops:
            finished += len(batch.step())
        assert ops.readbacks == 0, {op: n for op, n in ops.ops.items() if op in _READBACKS}
        assert calls[0] - before == 1  # the step's tokens, and nothing else
    assert finished == 2  # rows of 3 and 5 tokens left during the counted steps


def test_a_steps_sampling_launches_do_not_grow_with_the_batch(model: Any) -> None:
    counts = []
    for lengths in ([12], [12] * 6):
        batch = DecodeBatch(model, eos=[], pad=0, decode=str, max_rows=8, token_budget=4096)
        batch.admit(_spec_rows(lengths))
        batch.step()
        with _Ops() as ops:
            batch.step()
        counts.append(sum(ops.ops.values()))
    assert counts[0] == counts[1]  # per-row work is vectorised, never a loop of ops per row
