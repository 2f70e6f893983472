"""Tokens read back a step late: the ring of host buffers, and the batch that reads through it."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tests.unit.factories import sampling
from tests.unit.worker.churn import SPEC, churn, drain, same_rows
from tests.unit.worker.tiny_model import tiny_llama
from worker.decode import DecodeBatch, Row
from worker.forward import StepMode
from worker.readback import Readback

_CPU = torch.device("cpu")


def _tokens(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


def test_two_steps_in_flight_are_read_in_turn_and_a_slot_waits_for_its_read() -> None:
    ring = Readback(_CPU)
    first, second = ring.start(_tokens(1, 2, 3)), ring.start(_tokens(4, 5))
    with pytest.raises(RuntimeError, match="slot 0 written again"):
        ring.start(_tokens(6))
    assert ring.read(first) == [1, 2, 3]
    third = ring.start(_tokens(6))  # slot 0 again, now that it was read
    assert ring.read(second) == [4, 5]
    assert ring.read(third) == [6]
    with pytest.raises(RuntimeError, match="read twice"):
        ring.read(third)


def test_a_slot_grows_for_more_rows_and_a_dropped_one_is_free() -> None:
    ring = Readback(_CPU)
    many = torch.arange(300)
    pending = ring.start(many)
    assert ring.read(pending) == list(range(300))
    dropped = ring.start(_tokens(7))
    ring.drop(dropped)
    ring.start(_tokens(8))
    assert ring.read(ring.start(_tokens(9))) == [9]


@pytest.fixture(scope="module")
def model() -> Any:
    """A two-layer Llama whose vocabulary is larger than the nucleus's candidates."""
    tiny = tiny_llama(600, 256, seed=7)
    with torch.no_grad():
        tiny.lm_head.weight.mul_(40.0)  # peaked logits, as a trained model's: small nuclei
    return tiny.eval()


def _batch(model: Any, overlap: bool, eos: tuple[int, ...] = ()) -> DecodeBatch:
    return DecodeBatch(
        model,
        eos=eos,
        pad=0,
        decode=lambda t: "".join(chr(65 + x % 26) for x in t),
        max_rows=16,
        token_budget=8192,
        mode=StepMode(overlap=overlap),
    )


def test_a_row_read_late_finishes_a_step_later_with_its_own_tokens(model: Any) -> None:
    batch = _batch(model, overlap=True)
    row = Row(0, [3, 4], sampling(max_tokens=3, temperature=0.0))
    assert batch.admit([row]) == []  # the first token, sampled by the prefill
    assert batch.step() == [] and len(row.tokens) == 1  # the second token is on its way
    assert batch.step() == [] and len(row.tokens) == 2
    assert [f.row for f in batch.step()] == [row]  # the third read, a fourth drawn and dropped
    plain = _batch(model, overlap=False)
    alone = Row(0, [3, 4], sampling(max_tokens=3, temperature=0.0))
    plain.admit([alone])
    drain(plain)
    assert row.tokens == alone.tokens


def test_the_late_readback_samples_what_the_plain_one_does(model: Any) -> None:
    runs = []
    for overlap in (True, False):
        batch = _batch(model, overlap)
        run = churn(batch, 60, params=SPEC)  # penalties, counted on the device
        drain(batch)
        runs.append(run.tokens())
    assert same_rows(*runs)


def test_penalties_count_the_token_in_flight_when_rows_join() -> None:
    # Logits of this tiny model are ~0.1 apart: a presence penalty of 2 forbids repeats, so a
    # count lost while rows join (rebuilt from tokens not yet read) changes what rows decode.
    flat = tiny_llama(48, 256, seed=1234)
    runs = []
    for overlap in (True, False):
        batch = _batch(flat, overlap)
        run = churn(batch, 60, params={"temperature": 0.0, "presence_penalty": 2.0})
        drain(batch)
        runs.append(run.tokens())
    assert same_rows(*runs)


def test_stops_and_eos_end_rows_read_late_as_they_end_the_others(model: Any) -> None:
    def rows() -> list[Row]:
        stop = sampling(max_tokens=12, temperature=0.7, top_p=0.8, stop=("C",))
        return [Row(i, [3 + i, 4, 5], stop, seed=i) for i in range(8)]

    ends = []
    for overlap in (True, False):
        batch = _batch(model, overlap, eos=(7,))
        admitted = rows()
        finished = batch.admit(admitted)
        while batch.rows:
            finished += batch.step()
        ends.append(sorted((f.row.handle, f.reason, tuple(f.row.tokens)) for f in finished))
    assert ends[0] == ends[1]
    assert {reason for _, reason, _ in ends[0]} >= {"stop", "length"}


def test_rows_removed_or_cleared_with_a_step_in_flight(model: Any) -> None:
    plain, late = _batch(model, overlap=False), _batch(model, overlap=True)
    kept: list[list[Row]] = []
    for batch in (plain, late):
        rows = [Row(i, [3 + i, 4], sampling(max_tokens=10, temperature=0.0)) for i in range(3)]
        batch.admit(rows)
        batch.step()
        batch.step()
        assert batch.remove(lambda r: r.handle == 1) == [rows[1]]
        drain(batch)
        kept.append(rows)
    assert [r.tokens for r in kept[0]][::2] == [r.tokens for r in kept[1]][::2]
    assert len(kept[1][1].tokens) <= len(kept[0][1].tokens)  # nothing came after its removal
    late.admit([Row(9, [3, 4], sampling(max_tokens=10, temperature=0.0))])
    late.step()
    assert late.clear() and not late.rows
    again = Row(10, [3, 4], sampling(max_tokens=4, temperature=0.0))
    late.admit([again])  # the dropped step's slot is free again
    drain(late)
    assert len(again.tokens) == 4
