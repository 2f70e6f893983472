"""Per-row sampling: penalties against a hand computation, top_p, temperature, stopping."""

from __future__ import annotations

import math
import time

import pytest
import torch

from tests.unit.factories import sampling
from worker.sampling import RowSampler, RowStopper, apply_penalties, keep_top_p

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


def test_row_sampler_excludes_the_prompt_from_the_counts() -> None:
    prompt = [3, 3, 3, 1]
    generated = [1, 2, 1]
    rows = [sampling(temperature=1.0, top_p=1.0, presence_penalty=0.5, frequency_penalty=1.0)]
    sampler = RowSampler(rows, prompt_len=len(prompt), device=_CPU)
    scores = torch.zeros(1, 5)
    out = sampler(_ids([prompt + generated]), scores)  # type: ignore[arg-type]
    # token 1: 2 times, token 2: once, token 3 (prompt only): untouched.
    _assert_close(out, [[0.0, -2.5, -1.5, 0.0, 0.0]])


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
    sampler = RowSampler(rows, prompt_len=2, device=_CPU)
    scores = torch.tensor([[0.5, 2.0, 1.9, -3.0], [0.5, 2.0, 1.9, -3.0]])
    out = sampler(_ids([[7, 8], [7, 8]]), scores)  # type: ignore[arg-type]

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
    sampler = RowSampler(rows, prompt_len=1, device=_CPU)
    scores = torch.tensor([[0.0, 3.0, 2.0]])
    out = sampler(_ids([[0, 1]]), scores)  # type: ignore[arg-type]  # token 1 was generated
    assert _kept(out[0]) == {2}


def test_temperature_scales_each_row() -> None:
    rows = [
        sampling(temperature=0.5, top_p=1.0),
        sampling(temperature=1.0, top_p=1.0),
        sampling(temperature=0.25, top_p=1.0),
    ]
    sampler = RowSampler(rows, prompt_len=1, device=_CPU)
    scores = torch.tensor([[1.0, -2.0, 0.5]] * 3)
    out = sampler(_ids([[0]] * 3), scores)  # type: ignore[arg-type]
    assert out[0].tolist() == pytest.approx([2.0, -4.0, 1.0])
    assert out[1].tolist() == pytest.approx([1.0, -2.0, 0.5])
    assert out[2].tolist() == pytest.approx([4.0, -8.0, 2.0])


def test_temperature_applies_before_top_p() -> None:
    # logits [log 2, 0, 0] at temperature 1: probs 0.5, 0.25, 0.25 (top_p 0.6 keeps two).
    # At temperature 0.5: logits doubled, probs 4/6, 1/6, 1/6: top_p 0.6 keeps only the top.
    logits = torch.tensor([[math.log(2.0), 0.0, 0.0]] * 2)
    rows = [sampling(temperature=1.0, top_p=0.6), sampling(temperature=0.5, top_p=0.6)]
    out = RowSampler(rows, prompt_len=0, device=_CPU)(_ids([[1], [1]]), logits)  # type: ignore[arg-type]
    assert len(_kept(out[0])) == 2
    assert _kept(out[1]) == {0}


def test_row_sampler_without_penalties_leaves_generated_tokens_alone() -> None:
    rows = [sampling(temperature=1.0, top_p=1.0)]
    sampler = RowSampler(rows, prompt_len=0, device=_CPU)
    scores = torch.tensor([[1.0, 2.0, 3.0]])
    out = sampler(_ids([[2, 2, 2]]), scores)  # type: ignore[arg-type]
    _assert_close(out, [[1.0, 2.0, 3.0]])


# --- RowStopper --------------------------------------------------------------------------

_ALPHABET = "abcdefghijklmnopqrstuvwxyz."


def _decode(ids: list[int]) -> str:
    return "".join(_ALPHABET[i] for i in ids)


def _encode(text: str) -> list[int]:
    return [_ALPHABET.index(c) for c in text]


def _stopper(*rows: dict[str, object], prompt_len: int = 2) -> RowStopper:
    return RowStopper([sampling(**r) for r in rows], prompt_len=prompt_len, decode=_decode)


def _done(stopper: RowStopper, generated: list[str], prompt: str = "zz") -> list[bool]:
    ids = _ids([_encode(prompt + g) for g in generated])
    return stopper(ids, torch.zeros(len(generated), 3)).tolist()  # type: ignore[arg-type]


def test_stopper_counts_generated_tokens_per_row() -> None:
    stopper = _stopper({"max_tokens": 2}, {"max_tokens": 3}, {"max_tokens": 4})
    assert _done(stopper, ["ab", "ab", "ab"]) == [True, False, False]
    assert _done(stopper, ["abc", "abc", "abc"]) == [True, True, False]
    assert _done(stopper, ["abcd", "abcd", "abcd"]) == [True, True, True]


def test_stopper_ignores_the_prompt_length() -> None:
    stopper = _stopper({"max_tokens": 3}, prompt_len=5)
    assert _done(stopper, ["ab"], prompt="zzzzz") == [False]
    assert _done(stopper, ["abc"], prompt="zzzzz") == [True]


def test_stopper_stops_a_row_at_its_own_stop_string() -> None:
    stopper = _stopper(
        {"max_tokens": 50, "stop": (".",)},
        {"max_tokens": 50, "stop": ("cd",)},
        {"max_tokens": 50},
    )
    assert _done(stopper, ["abc", "abc", "abc"]) == [False, False, False]
    assert _done(stopper, ["ab.", "abx", "ab."]) == [True, False, False]
    assert _done(stopper, ["abx", "bcd", "bcd"]) == [False, True, False]


def test_stop_string_in_the_prompt_does_not_stop() -> None:
    stopper = _stopper({"max_tokens": 50, "stop": ("z",)})
    assert _done(stopper, ["ab"], prompt="zz") == [False]


def test_any_of_several_stop_strings_stops() -> None:
    stopper = _stopper({"max_tokens": 50, "stop": ("xy", "q")})
    assert _done(stopper, ["abq"]) == [True]
    assert _done(stopper, ["axy"]) == [True]
    assert _done(stopper, ["ax"]) == [False]


def test_stopper_stops_a_row_past_its_deadline() -> None:
    rows = [sampling(max_tokens=50), sampling(max_tokens=50), sampling(max_tokens=50)]
    now = time.time()
    stopper = RowStopper(rows, prompt_len=2, decode=_decode, deadlines=[now - 1, now + 600, None])
    assert _done(stopper, ["ab", "ab", "ab"]) == [True, False, False]
