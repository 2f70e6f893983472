"""Per-row sampling: penalties against a hand computation, top_p, temperature, stopping."""

from __future__ import annotations

import math

import pytest
import torch

from tests.unit.factories import sampling
from worker.sampling import (
    FinishReason,
    RowSampler,
    apply_penalties,
    finish_reason,
    keep_top_p,
    token_counts,
)
from worker.text import GrowingText

_CPU = torch.device("cpu")
_NEG_INF = float("-inf")


def _col(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).unsqueeze(1)


def _ids(rows: list[list[int]]) -> torch.LongTensor:
    return torch.tensor(rows, dtype=torch.long)  # type: ignore[return-value]


def _assert_close(actual: torch.Tensor, expected: list[list[float]]) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype))


def _kept(row: torch.Tensor) -> set[int]:
    return {i for i, v in enumerate(row.tolist()) if v != _NEG_INF}


# --- apply_penalties ---------------------------------------------------------------------


def test_penalties_match_a_hand_computation() -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])
    generated = _ids([[1, 3, 3, 3]])  # token 1 once, token 3 three times
    out = apply_penalties(logits, generated, presence=_col(0.5), frequency=_col(0.25))
    # logit[j] - count[j] * 0.25 - (count[j] > 0) * 0.5
    expected = [1.0, 2.0 - 0.25 - 0.5, 3.0, 4.0 - 3 * 0.25 - 0.5, 5.0]
    _assert_close(out, [expected])


def test_presence_is_applied_once_per_present_token() -> None:
    logits = torch.zeros(1, 4)
    out = apply_penalties(logits, _ids([[2, 2, 2, 2, 2]]), _col(1.5), _col(0.0))
    _assert_close(out, [[0.0, 0.0, -1.5, 0.0]])


def test_frequency_is_applied_per_occurrence() -> None:
    logits = torch.zeros(1, 4)
    out = apply_penalties(logits, _ids([[0, 2, 2, 2, 2, 2]]), _col(0.0), _col(0.4))
    _assert_close(out, [[-0.4, 0.0, -2.0, 0.0]])


def test_negative_penalties_raise_logits() -> None:
    logits = torch.zeros(1, 3)
    out = apply_penalties(logits, _ids([[1, 1]]), presence=_col(-0.5), frequency=_col(-1.0))
    _assert_close(out, [[0.0, 2.5, 0.0]])


def test_penalties_are_per_row() -> None:
    logits = torch.zeros(2, 3)
    generated = _ids([[0, 0], [2, 1]])
    out = apply_penalties(logits, generated, presence=_col(1.0, 0.0), frequency=_col(0.0, 2.0))
    _assert_close(out, [[-1.0, 0.0, 0.0], [0.0, -2.0, -2.0]])


def test_nothing_generated_means_no_penalty() -> None:
    logits = torch.tensor([[1.0, 2.0]])
    out = apply_penalties(logits, _ids([[]]).reshape(1, 0), _col(2.0), _col(2.0))
    assert out.tolist() == [[1.0, 2.0]]


def test_row_sampler_penalises_the_counted_tokens() -> None:
    generated = [1, 2, 1]  # the decode loop counts generated tokens only, never the prompt
    rows = [sampling(temperature=1.0, top_p=1.0, presence_penalty=0.5, frequency_penalty=1.0)]
    sampler = RowSampler.of(rows, _CPU)
    out = sampler(torch.zeros(1, 5), token_counts(_ids([generated]), 5))
    # token 1: 2 times, token 2: once, tokens 0, 3, 4: untouched.
    _assert_close(out, [[0.0, -2.5, -1.5, 0.0, 0.0]])


def test_token_counts_count_per_row() -> None:
    counts = token_counts(_ids([[0, 2, 2], [1, 1, 1]]), 4)
    assert counts.tolist() == [[1.0, 0.0, 2.0, 0.0], [0.0, 3.0, 0.0, 0.0]]


# --- keep_top_p --------------------------------------------------------------------------

# Probabilities 0.5, 0.25, 0.125, 0.125: exact in float32, so the boundaries are exact too.
_DYADIC = torch.log(torch.tensor([[0.125, 0.5, 0.125, 0.25]]))  # ranks: 1, 3, then 0 and 2


@pytest.mark.parametrize(
    ("top_p", "kept"),
    [
        (0.0, {1}),
        (0.3, {1}),
        (0.5, {1}),
        (0.6, {1, 3}),
        (0.75, {1, 3}),
        (0.9, {0, 1, 2, 3}),
        (1.0, {0, 1, 2, 3}),
    ],
)
def test_keep_top_p_keeps_the_smallest_set_reaching_top_p(top_p: float, kept: set[int]) -> None:
    assert _kept(keep_top_p(_DYADIC, _col(top_p))[0]) == kept


def test_keep_top_p_between_two_tied_tokens_keeps_one_of_them() -> None:
    # 0.8 needs a third token; the two of probability 0.125 tie, so either may be the one.
    kept = _kept(keep_top_p(_DYADIC, _col(0.8))[0])
    assert len(kept) == 3
    assert {1, 3} < kept


def test_keep_top_p_leaves_kept_logits_unchanged() -> None:
    out = keep_top_p(_DYADIC, _col(0.75))
    assert out[0, 1].item() == _DYADIC[0, 1].item()
    assert out[0, 3].item() == _DYADIC[0, 3].item()


def test_keep_top_p_zero_keeps_only_the_argmax() -> None:
    logits = torch.tensor([[0.1, 3.0, 2.9, -1.0], [5.0, 4.0, 4.5, 4.9]])
    out = keep_top_p(logits, _col(0.0, 0.0))
    assert _kept(out[0]) == {1}
    assert _kept(out[1]) == {0}


def test_keep_top_p_always_keeps_the_top_token_even_when_it_alone_exceeds() -> None:
    logits = torch.tensor([[10.0, 0.0, 0.0]])  # top token has ~0.9999 of the mass
    assert _kept(keep_top_p(logits, _col(0.5))[0]) == {0}


def test_keep_top_p_is_per_row() -> None:
    logits = torch.cat([_DYADIC, _DYADIC])
    out = keep_top_p(logits, _col(0.0, 1.0))
    assert _kept(out[0]) == {1}
    assert _kept(out[1]) == {0, 1, 2, 3}


# --- RowSampler --------------------------------------------------------------------------


def test_greedy_row_beside_a_sampling_row() -> None:
    rows = [sampling(temperature=0.0, top_p=1.0), sampling(temperature=1.0, top_p=1.0)]
    sampler = RowSampler.of(rows, _CPU)
    scores = torch.tensor([[0.5, 2.0, 1.9, -3.0], [0.5, 2.0, 1.9, -3.0]])
    out = sampler(scores, None)

    assert _kept(out[0]) == {1}
    assert out[0, 1].item() != _NEG_INF
    assert _kept(out[1]) == {0, 1, 2, 3}
    assert out[1].tolist() == pytest.approx(scores[1].tolist())
    # Sampling from the processed scores: the greedy row can only give its arg-max.
    probs = out.softmax(dim=-1)
    assert probs[0].tolist() == pytest.approx([0.0, 1.0, 0.0, 0.0])
    assert (probs[1] > 0).sum().item() == 4


def test_greedy_row_picks_the_argmax_after_penalties() -> None:
    rows = [sampling(temperature=0.0, top_p=1.0, presence_penalty=2.0)]
    sampler = RowSampler.of(rows, _CPU)
    scores = torch.tensor([[0.0, 3.0, 2.0]])
    out = sampler(scores, token_counts(_ids([[1]]), 3))  # token 1 was generated
    assert _kept(out[0]) == {2}


def test_temperature_scales_each_row() -> None:
    rows = [
        sampling(temperature=0.5, top_p=1.0),
        sampling(temperature=1.0, top_p=1.0),
        sampling(temperature=0.25, top_p=1.0),
    ]
    sampler = RowSampler.of(rows, _CPU)
    scores = torch.tensor([[1.0, -2.0, 0.5]] * 3)
    out = sampler(scores, None)
    assert out[0].tolist() == pytest.approx([2.0, -4.0, 1.0])
    assert out[1].tolist() == pytest.approx([1.0, -2.0, 0.5])
    assert out[2].tolist() == pytest.approx([4.0, -8.0, 2.0])


def test_temperature_applies_before_top_p() -> None:
    # logits [log 2, 0, 0] at temperature 1: probs 0.5, 0.25, 0.25 (top_p 0.6 keeps two).
    # At temperature 0.5: logits doubled, probs 4/6, 1/6, 1/6: top_p 0.6 keeps only the top.
    logits = torch.tensor([[math.log(2.0), 0.0, 0.0]] * 2)
    rows = [sampling(temperature=1.0, top_p=0.6), sampling(temperature=0.5, top_p=0.6)]
    out = RowSampler.of(rows, _CPU)(logits, None)
    assert len(_kept(out[0])) == 2
    assert _kept(out[1]) == {0}


def test_row_sampler_without_penalties_leaves_generated_tokens_alone() -> None:
    rows = [sampling(temperature=1.0, top_p=1.0)]
    sampler = RowSampler.of(rows, _CPU)
    scores = torch.tensor([[1.0, 2.0, 3.0]])
    out = sampler(scores, token_counts(_ids([[2, 2, 2]]), 3))
    _assert_close(out, [[1.0, 2.0, 3.0]])


def test_sample_gives_the_argmax_of_greedy_rows_and_draws_from_the_nucleus() -> None:
    rows = [sampling(temperature=0.0, top_p=1.0), sampling(temperature=1.0, top_p=0.75)]
    sampler = RowSampler.of(rows, _CPU)
    scores = torch.cat([torch.tensor([[0.0, 1.0, 0.5, 0.9]]), _DYADIC])
    drawn = [sampler.sample(scores, None, torch.tensor([n, n]))[1] for n in range(400)]
    assert {d[0] for d in drawn} == {1}
    seen = [d[1] for d in drawn]
    assert set(seen) == {1, 3}  # the nucleus of 0.75: probabilities 0.5 and 0.25
    assert 0.58 < seen.count(1) / len(seen) < 0.76  # renormalised: 2/3 of the draws


def test_select_and_join_follow_the_rows() -> None:
    a = RowSampler.of([sampling(temperature=0.1), sampling(temperature=0.2)], _CPU)
    b = RowSampler.of([sampling(temperature=0.3, presence_penalty=1.0)], _CPU)
    joined = a.join(b)
    assert joined.temperature.squeeze(1).tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert joined.penalised and not a.penalised
    kept = joined.select([2, 0])
    assert kept.temperature.squeeze(1).tolist() == pytest.approx([0.3, 0.1])
    assert kept.presence.squeeze(1).tolist() == [1.0, 0.0]


# --- finish_reason -------------------------------------------------------------------------

_ALPHABET = "abcdefghijklmnopqrstuvwxyz."
_EOS = 99


def _decode(ids: list[int]) -> str:
    return "".join(_ALPHABET[i] for i in ids if i != _EOS)


def _encode(text: str) -> list[int]:
    return [_ALPHABET.index(c) for c in text]


def _done(
    rows: list[dict[str, object]], generated: list[str], past: bool = False
) -> list[FinishReason | None]:
    return [
        finish_reason(GrowingText(_decode), _encode(g), sampling(**r), {_EOS}, past)
        for r, g in zip(rows, generated, strict=True)
    ]


def test_finish_counts_generated_tokens_per_row() -> None:
    rows: list[dict[str, object]] = [{"max_tokens": 2}, {"max_tokens": 3}, {"max_tokens": 4}]
    assert _done(rows, ["ab", "ab", "ab"]) == ["length", None, None]
    assert _done(rows, ["abc", "abc", "abc"]) == ["length", "length", None]
    assert _done(rows, ["abcd", "abcd", "abcd"]) == ["length", "length", "length"]


def test_finish_at_a_rows_own_stop_string() -> None:
    rows: list[dict[str, object]] = [
        {"max_tokens": 50, "stop": (".",)},
        {"max_tokens": 50, "stop": ("cd",)},
        {"max_tokens": 50},
    ]
    assert _done(rows, ["abc", "abc", "abc"]) == [None, None, None]
    assert _done(rows, ["ab.", "abx", "ab."]) == ["stop", None, None]
    assert _done(rows, ["abx", "bcd", "bcd"]) == [None, "stop", None]


def test_any_of_several_stop_strings_stops() -> None:
    rows: list[dict[str, object]] = [{"max_tokens": 50, "stop": ("xy", "q")}]
    assert _done(rows, ["abq"]) == ["stop"]
    assert _done(rows, ["axy"]) == ["stop"]
    assert _done(rows, ["ax"]) == [None]


def test_finish_at_eos() -> None:
    text = GrowingText(_decode)
    assert finish_reason(text, [0, 1, _EOS], sampling(max_tokens=50), {_EOS}, False) == "eos"
    assert finish_reason(text, [0, _EOS, 1], sampling(max_tokens=50), {_EOS}, False) is None


def test_finish_past_the_deadline() -> None:
    rows: list[dict[str, object]] = [{"max_tokens": 50}]
    assert _done(rows, ["ab"], past=True) == ["deadline"]
    assert _done(rows, ["ab"], past=False) == [None]
