"""The fast nucleus (top-k candidates, full sort only where needed) against the full sort."""

from __future__ import annotations

import pytest
import torch

from tests.unit.factories import sampling
from worker.draws import reference_uniform, task_seed, uniforms
from worker.nucleus import draw, full_rank, kept, ranked, unsure
from worker.sampling import RowSampler

_CPU = torch.device("cpu")
_VOCAB = 49_152
_TOP_PS = (0.0, 0.1, 0.5, 0.8, 0.9, 0.95, 0.999)


def _rows(seed: int) -> torch.Tensor:
    """Random, peaked, flat and tied logit rows over a real-sized vocabulary."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(12, _VOCAB, generator=g)
    rows = [noise[:4] * s for s in (1.0, 4.0, 12.0, 0.05)]  # flat .. very peaked, very flat
    tied = (noise[4:8] * 3).round()  # many exact ties at every level
    spikes = torch.full((4, _VOCAB), -20.0)
    spikes[:, :40] = 5.0  # forty equal tokens on top: ties across any boundary
    return torch.cat([*rows, tied, spikes])


@pytest.mark.parametrize("seed", range(2))
def test_the_candidates_hold_the_same_nucleus_as_the_full_sort(seed: int) -> None:
    probs = _rows(seed).softmax(dim=-1)
    values, ids = full_rank(probs)
    u = torch.rand(probs.shape[0], generator=torch.Generator().manual_seed(seed))
    sure = 0
    for k in (8, 64, 256):
        fast_values, fast_ids = ranked(probs, k)
        for p in _TOP_PS:
            top_p = torch.full((probs.shape[0], 1), p)
            count, fast_count = kept(values, top_p), kept(fast_values, top_p)
            ok = ~unsure(fast_values, fast_count, _VOCAB)
            sure += int(ok.sum())
            assert torch.equal(fast_count[ok], count[ok])
            for i in ok.nonzero().flatten().tolist():
                n = int(count[i])
                assert fast_ids[i, :n].tolist() == ids[i, :n].tolist()  # same tokens, in order
                assert torch.equal(fast_values[i, :n], values[i, :n])  # same probabilities
            slow_draw = draw(values, ids, count, u)
            fast_draw = draw(fast_values, fast_ids, fast_count, u)
            assert torch.equal(fast_draw[ok], slow_draw[ok])
    assert sure > 100  # the fast path decides most rows, not the fallback


def test_a_nucleus_past_the_candidates_is_flagged() -> None:
    probs = torch.zeros(1, _VOCAB)
    probs[0, :1000] = 1 / 1000  # a flat top of 1,000 tokens: top_p 0.9 keeps 900
    values, _ = ranked(probs, 256)
    count = kept(values, torch.tensor([[0.9]]))
    assert unsure(values, count, _VOCAB).tolist() == [True]


def test_ties_straddling_the_last_candidate_are_flagged() -> None:
    probs = torch.tensor([[0.4, 0.2, 0.2, 0.2]])
    values, _ = ranked(probs, 2)  # the second candidate ties with one left out
    count = kept(values, torch.tensor([[0.5]]))  # keeps 0.4 and one of the 0.2s
    assert unsure(values, count, 4).tolist() == [True]


def test_top_p_zero_and_greedy_rows_keep_the_lowest_id_of_tied_maxima() -> None:
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0]] * 2)
    rows = [sampling(temperature=0.7, top_p=0.0), sampling(temperature=0.0, top_p=1.0)]
    _, tokens = RowSampler.of(rows, _CPU).sample(logits, None, torch.tensor([0, 0]))
    assert tokens == [1, 1]


def _sampler_rows() -> list[object]:
    return [
        sampling(temperature=0.7, top_p=0.9),
        sampling(temperature=0.7, top_p=1.0),
        sampling(temperature=0.0, top_p=1.0),
        sampling(temperature=1.0, top_p=0.999),
    ]


@pytest.mark.parametrize("step", range(4))
def test_sample_draws_what_the_full_sort_draws_with_the_same_uniform(step: int) -> None:
    scores = torch.cat([_rows(step)[i : i + 1] for i in (0, 1, 5, 3)])  # the last row flat
    rows = _sampler_rows()
    sampler = RowSampler.of(rows, _CPU, seeds=[11, 12, 13, 14])  # type: ignore[arg-type]
    index = torch.full((4,), step)
    _, tokens = sampler.sample(scores, None, index)

    probs = sampler.scaled(scores, None).softmax(dim=-1)
    u = uniforms(sampler.seeds, index)
    top_p = torch.tensor([[0.9], [1.0], [0.0], [0.999]])
    values, ids = full_rank(probs)
    expected = draw(values, ids, kept(values, top_p), u).tolist()
    cdf = probs[1].cumsum(dim=0)
    expected[1] = int(torch.searchsorted(cdf, u[1] * cdf[-1], right=True))  # top_p 1: all
    assert tokens == expected


def test_a_rows_draws_do_not_depend_on_the_rows_beside_it() -> None:
    scores = _rows(7)[:4]
    rows = _sampler_rows()
    alone = RowSampler.of(rows[:1], _CPU, seeds=[5])  # type: ignore[arg-type]
    crowd = RowSampler.of(rows[1:] + rows[:1], _CPU, seeds=[1, 2, 3, 5])  # type: ignore[arg-type]
    for n in range(8):
        _, a = alone.sample(scores[:1], None, torch.tensor([n]))
        _, b = crowd.sample(torch.cat([scores[1:], scores[:1]]), None, torch.full((4,), n))
        assert a[0] == b[3]


def test_uniforms_match_splitmix64_in_python_integers() -> None:
    seeds = [0, 1, task_seed("r", 0, None), task_seed("r", 1, 42), 2**62 + 12345]
    index = [0, 7, 123, 99_999, 3]
    got = uniforms(torch.tensor(seeds), torch.tensor(index)).tolist()
    assert got == [reference_uniform(s, n) for s, n in zip(seeds, index, strict=True)]
    assert all(0.0 <= u < 1.0 for u in got)


def test_task_seeds_follow_the_callers_seed_else_the_request_and_differ_per_choice() -> None:
    assert task_seed("a", 0, 42) == task_seed("b", 0, 42)  # the caller's seed decides
    assert task_seed("a", 0, 42) != task_seed("a", 1, 42)
    assert task_seed("a", 0, None) != task_seed("b", 0, None)
    assert task_seed("a", 0, None) == task_seed("a", 0, None)
    assert 0 <= task_seed("a", 3, -(2**63)) < 2**63
