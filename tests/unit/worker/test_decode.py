"""The continuous-batching decode loop on a tiny random Llama (float32, no download)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch

from tests.unit.factories import sampling
from tests.unit.worker.tiny_model import tiny_llama
from worker.decode import DecodeBatch, Row
from worker.prefix import Prefix, PrefixCache, common_length

_VOCAB = 48


@pytest.fixture(scope="module")
def model() -> Any:
    """A two-layer Llama with random weights: fast, deterministic in float32."""
    return tiny_llama(_VOCAB, 256, seed=1234).eval()


def _letters(ids: list[int]) -> str:
    return "".join(chr(ord("A") + i) for i in ids)


def _batch(model: Any, **overrides: Any) -> DecodeBatch:
    options: dict[str, Any] = {
        "eos": [],
        "pad": 0,
        "decode": _letters,
        "max_rows": 8,
        "token_budget": 4096,
    }
    return DecodeBatch(model, **(options | overrides))


def _greedy(prompt: list[int], max_tokens: int, **extra: Any) -> Row:
    return Row(prompt, prompt, sampling(max_tokens=max_tokens, temperature=0.0, **extra))


def _reference(model: Any, prompt: list[int], n: int) -> list[int]:
    """What ``generate`` decodes greedily for ``prompt`` alone."""
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([prompt]), max_new_tokens=n, do_sample=False, pad_token_id=0
        )
    return [int(t) for t in out[0, len(prompt) :]]


def _run(batch: DecodeBatch) -> list[Row]:
    """Step until every row finished; the rows in the order they finished."""
    order = []
    while batch.rows:
        order += [f.row for f in batch.step()]
    return order


_LONG = [5, 6, 7, 8, 9, 10, 11, 12, 13]
_SHORT = [3, 4]
_MID = [20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33]


def test_rows_joining_a_running_batch_decode_what_generate_decodes_alone(model: Any) -> None:
    batch = _batch(model)
    long = _greedy(_LONG, 20)
    batch.admit([long])
    for _ in range(5):
        assert batch.step() == []
    short, mid = _greedy(_SHORT, 6), _greedy(_MID, 10)  # a shorter and a longer prompt
    batch.admit([short, mid])
    assert len(batch.rows) == 3
    finished = _run(batch)
    assert finished == [short, mid, long]  # each leaves the batch when done
    for row in finished:
        assert row.tokens == _reference(model, row.prompt, row.sampling.max_tokens)


def test_finished_rows_leave_and_the_cache_shrinks(model: Any) -> None:
    batch = _batch(model)
    batch.admit([_greedy(_MID, 3), _greedy(_SHORT, 12)])
    assert batch.cache_tokens == 2 * len(_MID)
    done = batch.step() + batch.step()
    assert [len(f.row.tokens) for f in done] == [3]
    assert [f.reason for f in done] == ["length"]
    # The short row alone is left; padding columns nobody uses are trimmed away.
    assert batch.cache_tokens == len(_SHORT) + 2


def test_max_tokens_count_generated_tokens_not_the_prompt(model: Any) -> None:
    batch = _batch(model)
    rows = [_greedy(_MID, 1), _greedy(_SHORT, 4)]
    finished = batch.admit(rows)
    assert [f.row for f in finished] == [rows[0]]  # one token: done at the prefill
    _run(batch)
    assert [len(r.tokens) for r in rows] == [1, 4]


def test_eos_ends_a_row(model: Any) -> None:
    expected = _reference(model, _LONG, 8)
    eos = expected[3]
    batch = _batch(model, eos=[eos])
    row = _greedy(_LONG, 8)
    batch.admit([row])
    _run(batch)
    assert row.tokens == expected[: expected.index(eos) + 1]


def test_a_stop_string_in_the_prompt_does_not_stop_but_a_generated_one_does(model: Any) -> None:
    expected = _reference(model, _LONG, 10)
    in_prompt = next(t for t in _LONG if t not in expected)
    batch = _batch(model)
    free = _greedy(_LONG, 10, stop=(_letters([in_prompt]),))
    stopped = _greedy(_LONG, 10, stop=(_letters(expected[4:6]),))
    batch.admit([free, stopped])
    finished = {id(f.row): f.reason for f in _run_finished(batch)}
    assert free.tokens == expected and finished[id(free)] == "length"
    assert stopped.tokens == expected[:6] and finished[id(stopped)] == "stop"


def _run_finished(batch: DecodeBatch) -> list[Any]:
    out = []
    while batch.rows:
        out += batch.step()
    return out


def test_a_row_past_its_deadline_is_stopped(model: Any) -> None:
    batch = _batch(model)
    late = Row("late", _LONG, sampling(max_tokens=50), deadline=time.time() + 0.2)
    other = _greedy(_SHORT, 50)
    batch.admit([late, other])
    time.sleep(0.25)
    finished = batch.step()
    assert [(f.row, f.reason) for f in finished] == [(late, "deadline")]
    assert batch.rows == [other]


def test_a_presence_penalty_forbids_repeats_in_a_row_joining_later(model: Any) -> None:
    # Logits of a random tiny model are ~0.1 apart: a presence penalty of 2 forbids repeats.
    batch = _batch(model)
    row = Row("p", _LONG, sampling(max_tokens=12, temperature=0.0, presence_penalty=2.0))
    plain = _greedy(_LONG, 12)
    batch.admit([plain])
    batch.step()
    batch.admit([row])  # joins a batch that had no penalty: counts start here
    _run(batch)
    assert len(set(row.tokens)) == len(row.tokens)
    assert len(set(plain.tokens)) < len(plain.tokens), "pick a prompt whose greedy run repeats"


def test_the_token_budget_and_row_cap_bound_admission(model: Any) -> None:
    batch = _batch(model, token_budget=100, max_rows=3)
    first = _greedy(_MID, 30)  # life 44
    assert batch.fits([first, _greedy(_SHORT, 40)])  # 2 x 44 <= 100
    assert not batch.fits([first, _greedy(_SHORT, 40), _greedy(_SHORT, 2)])  # 3 x 44
    assert not batch.fits([_greedy(_SHORT, 2)] * 4)  # row cap
    batch.admit([first])
    assert not batch.fits([_greedy(_SHORT, 60)])  # 2 x 62
    lone = _batch(model, token_budget=10)
    assert lone.fits([_greedy(_MID, 30)])  # an empty batch takes any row


def test_sampling_rows_beside_greedy_rows(model: Any) -> None:
    batch = _batch(model)
    greedy = _greedy(_LONG, 10)
    hot = [Row(i, _SHORT, sampling(max_tokens=10, temperature=1.0)) for i in range(3)]
    batch.admit([greedy, *hot])
    _run(batch)
    assert greedy.tokens == _reference(model, _LONG, 10)
    assert all(len(r.tokens) == 10 and all(0 <= t < _VOCAB for t in r.tokens) for r in hot)


def test_removed_rows_leave_and_the_others_decode_on_unchanged(model: Any) -> None:
    batch = _batch(model)
    kept, doomed = _greedy(_LONG, 10), _greedy(_MID, 10)
    batch.admit([kept, doomed])
    batch.step()
    assert batch.remove(lambda r: r is doomed) == [doomed]
    assert batch.rows == [kept]
    _run(batch)
    assert kept.tokens == _reference(model, _LONG, 10)


# --- shared prefixes ----------------------------------------------------------------------

_START = [40, 41, 42, 43, 44]  # a "system turn" several prompts begin with


def _input_tokens(model: Any) -> tuple[list[int], Any]:
    """Counts the tokens of every forward pass of ``model`` (remove the returned handle)."""
    seen: list[int] = []

    def hook(_: Any, args: Any, kwargs: dict[str, Any]) -> None:
        ids: torch.Tensor = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        seen.append(int(ids.numel()))

    return seen, model.register_forward_pre_hook(hook, with_kwargs=True)


def test_rows_sharing_a_start_prefill_it_once_and_decode_as_alone(model: Any) -> None:
    batch = _batch(model, prefixes=PrefixCache(min_tokens=3))
    rows = [_greedy([*_START, 7, 8, 9], 8), _greedy([*_START, 30], 8), _greedy(_START + _MID, 8)]
    seen, handle = _input_tokens(model)
    try:
        batch.admit(rows)
    finally:
        handle.remove()
    own = max(len(r.prompt) - len(_START) for r in rows)
    assert seen == [len(_START), len(rows) * own], "the start once, then each row's own tokens"
    assert batch.prefill_tokens_skipped == len(_START) * (len(rows) - 1)
    _run(batch)
    for row in rows:
        assert row.tokens == _reference(model, row.prompt, 8)


def test_a_kept_prefix_serves_a_row_joining_later(model: Any) -> None:
    batch = _batch(model, prefixes=PrefixCache(min_tokens=3))
    first = [_greedy([*_START, 7, 8], 12), _greedy([*_START, 9], 12)]
    batch.admit(first)
    batch.step()
    late = _greedy([*_START, 20, 21, 22], 6)
    seen, handle = _input_tokens(model)
    try:
        batch.admit([late])
    finally:
        handle.remove()
    assert seen == [3], "only the late row's own tokens were prefilled"
    _run(batch)
    for row in [*first, late]:
        assert row.tokens == _reference(model, row.prompt, row.sampling.max_tokens)


def test_short_common_starts_are_prefilled_as_usual(model: Any) -> None:
    batch = _batch(model, prefixes=PrefixCache(min_tokens=3))
    rows = [_greedy([40, 41, 7], 4), _greedy([40, 41, 8, 9], 4)]
    batch.admit(rows)
    assert batch.prefill_tokens_skipped == 0
    _run(batch)
    assert [r.tokens for r in rows] == [_reference(model, r.prompt, 4) for r in rows]


def test_common_length_leaves_every_prompt_a_token_of_its_own() -> None:
    assert common_length([[1, 2, 3], [1, 2, 4]]) == 2
    assert common_length([[1, 2], [1, 2, 3]]) == 1
    assert common_length([[1, 2, 3]]) == 2
    assert common_length([[5], [1, 2]]) == 0


def _prefix(tokens: list[int]) -> Prefix:
    empty = torch.zeros(1, 1, len(tokens), 1)
    return Prefix(tuple(tokens), ((empty, empty),))


def test_the_prefix_cache_picks_the_longest_match_and_stays_bounded() -> None:
    kept = PrefixCache(min_tokens=1, max_prefixes=2, max_tokens=10)
    kept.add(_prefix([1, 2]))
    kept.add(_prefix([1, 2, 3, 4]))
    found = kept.find([[1, 2, 3, 4, 5], [1, 2, 3, 4, 6]])
    assert found is not None and found.tokens == (1, 2, 3, 4)
    found = kept.find([[1, 2, 3, 4], [1, 2, 9]])  # a prompt must go beyond the prefix
    assert found is not None and found.tokens == (1, 2)
    assert kept.find([[7, 8, 9]]) is None
    kept.add(_prefix([5, 6, 7]))  # three entries: the least recently used, [1, 2, 3, 4], goes
    found = kept.find([[1, 2, 3, 4, 5]])
    assert len(kept) == 2 and found is not None and found.tokens == (1, 2)
    kept.add(_prefix(list(range(9))))  # 2 + 3 + 9 tokens > 10: both older ones go
    assert len(kept) == 1 and kept.tokens == 9
    kept.add(_prefix(list(range(11))))  # longer than the whole bound: not kept
    assert kept.tokens == 9
