"""Per-row sampling for a running batch: penalties, temperature, top_p, and when a row is done.

A batch of tasks needs its sampling parameters per row, and rows join and leave the batch as
they start and finish (``worker.decode``), so ``RowSampler`` holds them as column tensors that
follow the batch (``select``, ``join``). It does, in order, what OpenAI documents:

    logit[j] -= count[j] * frequency_penalty + (count[j] > 0) * presence_penalty

(``count`` = times token j was generated so far in this row, the prompt excluded), then divides
by the row's temperature and keeps the row's top_p nucleus. A row with temperature 0 keeps only
its arg-max, so it decodes greedily beside rows that sample.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from worker.draws import uniforms
from worker.nucleus import CANDIDATES, WIDEN, draw, full_rank, kept, ranked, unsure
from worker.text import GrowingText

FinishReason = Literal["eos", "length", "stop", "deadline"]


class SamplingParams(Protocol):
    """A row's parameters as the decode loop reads them: ``schemas.wire.Sampling`` has them,
    and so may a plain object (``benchmarks.gpu`` runs the loop where pydantic is absent)."""

    @property
    def max_tokens(self) -> int: ...
    @property
    def temperature(self) -> float: ...
    @property
    def top_p(self) -> float: ...
    @property
    def stop(self) -> Sequence[str]: ...
    @property
    def presence_penalty(self) -> float: ...
    @property
    def frequency_penalty(self) -> float: ...


@dataclass(frozen=True, slots=True)
class RowSampler:
    """Each row's parameters as ``[rows, 1]`` float32 columns, and its seed (``[rows]``).

    What the whole batch needs (penalty counts, a nucleus, a full-vocabulary draw) is known on
    the host from the rows' parameters, so a step asks the device nothing before its tokens.
    """

    temperature: torch.Tensor
    top_p: torch.Tensor
    presence: torch.Tensor
    frequency: torch.Tensor
    seeds: torch.Tensor
    params: tuple[SamplingParams, ...]

    @classmethod
    def of(
        cls, rows: Sequence[SamplingParams], device: torch.device, seeds: Sequence[int] = ()
    ) -> RowSampler:
        """The sampler of ``rows``, in order; ``seeds`` per row (default: 0 each)."""

        def column(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=device).reshape(-1, 1)

        return cls(
            temperature=column([r.temperature for r in rows]),
            top_p=column([r.top_p for r in rows]),
            presence=column([r.presence_penalty for r in rows]),
            frequency=column([r.frequency_penalty for r in rows]),
            seeds=torch.tensor(list(seeds) or [0] * len(rows), dtype=torch.long, device=device),
            params=tuple(rows),
        )

    @property
    def penalised(self) -> bool:
        """Whether any row has a presence or frequency penalty (counts are needed then)."""
        return any(r.presence_penalty or r.frequency_penalty for r in self.params)

    @property
    def nucleus(self) -> bool:
        """Whether any row keeps a nucleus (top_p < 1, or greedy: a nucleus of one)."""
        return any(_in_nucleus(r) for r in self.params)

    @property
    def full(self) -> bool:
        """Whether any row draws from its whole distribution (top_p 1, temperature > 0)."""
        return not all(_in_nucleus(r) for r in self.params)

    def select(self, index: Sequence[int]) -> RowSampler:
        """The rows at ``index`` (the rows still running), in that order."""
        at = torch.tensor(list(index), dtype=torch.long, device=self.seeds.device)
        t, p, pr, f, s = (c[at] for c in self._columns())
        return RowSampler(t, p, pr, f, s, tuple(self.params[i] for i in index))

    def join(self, other: RowSampler) -> RowSampler:
        """These rows followed by ``other``'s (rows joining the batch)."""
        pairs = zip(self._columns(), other._columns(), strict=True)
        t, p, pr, f, s = (torch.cat([a, b]) for a, b in pairs)
        return RowSampler(t, p, pr, f, s, self.params + other.params)

    def _columns(self) -> tuple[torch.Tensor, ...]:
        return (self.temperature, self.top_p, self.presence, self.frequency, self.seeds)

    def scaled(self, scores: torch.Tensor, penalty: torch.Tensor | None) -> torch.Tensor:
        """Float32 logits after the penalties and each row's temperature (1 for greedy rows)."""
        logits = scores.float() if penalty is None else torch.sub(scores, penalty)
        return logits / torch.where(self.temperature == 0, 1.0, self.temperature)

    def __call__(self, scores: torch.Tensor, counts: torch.Tensor | None) -> torch.Tensor:
        """The row-wise adjusted logits by the full sort (the reference ``sample`` keeps to)."""
        penalty = None if counts is None else penalties(counts, self.presence, self.frequency)
        logits = keep_top_p(self.scaled(scores, penalty), self._nucleus_top_p())
        return logits

    def sample(
        self, scores: torch.Tensor, penalty: torch.Tensor | None, index: torch.Tensor
    ) -> tuple[torch.Tensor, list[int]]:
        """One next token per row: on the device, and read back (the step's one readback).

        ``penalty`` is subtracted from the scores (``penalties``); ``index`` is each row's
        token number, which with its seed gives its uniform (``worker.draws``).
        """
        probs = self.scaled(scores, penalty).softmax(dim=-1)
        uniform = uniforms(self.seeds, index)
        tokens = _draw_full(probs, uniform) if self.full else None
        if not self.nucleus:
            assert tokens is not None
            return tokens, tokens.tolist()
        top_p = self._nucleus_top_p()
        values, ids = ranked(probs, min(CANDIDATES, probs.shape[1]))
        count = kept(values, top_p)
        picked = draw(values, ids, count, uniform)
        if tokens is not None:
            picked = torch.where(self._nucleus_rows(), picked, tokens)
        doubt = unsure(values, count, probs.shape[1]) & self._nucleus_rows()
        host, doubtful = torch.stack([picked, doubt.long()]).tolist()
        if any(doubtful):
            return _redraw(probs, top_p, uniform, picked, host, doubtful)
        return picked, host

    def sample_on_device(
        self, scores: torch.Tensor, penalty: torch.Tensor | None, index: torch.Tensor
    ) -> torch.Tensor:
        """The tokens ``sample`` draws, left on the device: nothing read back, so a nucleus
        comes from a full sort (on a GPU a sort of the vocabulary is cheaper than a wait)."""
        probs = self.scaled(scores, penalty).softmax(dim=-1)
        uniform = uniforms(self.seeds, index)
        tokens = _draw_full(probs, uniform) if self.full else None
        if not self.nucleus:
            assert tokens is not None
            return tokens
        if all(r.temperature == 0 for r in self.params if _in_nucleus(r)):
            # A nucleus of one, the most likely token: the first of them, as the stable sort.
            picked = probs.argmax(dim=-1)
        else:
            values, ids = full_rank(probs)
            picked = draw(values, ids, kept(values, self._nucleus_top_p()), uniform)
        return picked if tokens is None else torch.where(self._nucleus_rows(), picked, tokens)

    def _nucleus_top_p(self) -> torch.Tensor:
        return torch.where(self.temperature == 0, 0.0, self.top_p)

    def _nucleus_rows(self) -> torch.Tensor:
        return ((self.top_p < 1.0) | (self.temperature == 0)).squeeze(1)


def _in_nucleus(row: SamplingParams) -> bool:
    return row.top_p < 1.0 or row.temperature == 0


def _draw_full(probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draws over the whole vocabulary, in token-id order.

    One uniform per row: torch.multinomial and the exponential race draw one random number per
    vocabulary entry (~25 ms a step for 32 rows of a 49k vocabulary on two cores); this ~2 ms.
    """
    cdf = probs.cumsum(dim=-1)
    at = torch.searchsorted(cdf, uniform.unsqueeze(1) * cdf[:, -1:], right=True).squeeze(1)
    return at.clamp(max=cdf.shape[1] - 1)  # float rounding at the very top of the CDF


def _redraw(
    probs: torch.Tensor,
    top_p: torch.Tensor,
    uniform: torch.Tensor,
    picked: torch.Tensor,
    host: list[int],
    doubtful: list[int],
) -> tuple[torch.Tensor, list[int]]:
    """Draw again the rows whose nucleus may pass the candidates, from ever more of them.

    Rare (SmolLM2, top_p 0.9: ~1% of rows pass 64 candidates); each widening is a readback.
    """
    rows = [i for i, d in enumerate(doubtful) if d]
    k, vocab = CANDIDATES, probs.shape[1]
    while rows:
        k = min(k * WIDEN, vocab)
        at = torch.tensor(rows, dtype=torch.long, device=probs.device)
        values, ids = ranked(probs[at], k) if k < vocab else full_rank(probs[at])
        count = kept(values, top_p[at])
        again = draw(values, ids, count, uniform[at])
        tokens, doubt = torch.stack([again, unsure(values, count, vocab).long()]).tolist()
        sure = [j for j, d in enumerate(doubt) if not d]
        picked = picked.index_copy(0, at[sure], again[sure])
        for j in sure:
            host[rows[j]] = tokens[j]
        rows = [rows[j] for j, d in enumerate(doubt) if d]
    return picked, host


class Penalty:
    """Each row's generated-token counts and what its penalties subtract, kept step by step.

    Recomputing ``counts * frequency + (counts > 0) * presence`` over the vocabulary is four
    passes a step; a new token changes one entry per row, so only that entry is updated.
    """

    def __init__(self, counts: torch.Tensor, penalty: torch.Tensor) -> None:
        self.counts = counts
        self.penalty = penalty

    @classmethod
    def of(cls, generated: Sequence[Sequence[int]], sampler: RowSampler, vocab: int) -> Penalty:
        """The state of rows that generated these tokens so far."""
        device = sampler.seeds.device
        counts = torch.zeros(len(generated), vocab, device=device)
        for i, tokens in enumerate(generated):
            if tokens:
                ids = torch.tensor(list(tokens), dtype=torch.long, device=device)
                counts[i].index_add_(0, ids, torch.ones(len(tokens), device=device))
        return cls(counts, penalties(counts, sampler.presence, sampler.frequency))

    def add(self, tokens: torch.Tensor, sampler: RowSampler) -> None:
        """Count each row's new token (``[rows]``) and update its penalty in place."""
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        count = self.counts[rows, tokens] + 1
        self.counts[rows, tokens] = count
        self.penalty[rows, tokens] = count * sampler.frequency.squeeze(
            1
        ) + sampler.presence.squeeze(1)

    def select(self, at: torch.Tensor) -> Penalty:
        """The rows at ``at``, in that order."""
        return Penalty(self.counts[at], self.penalty[at])


def token_counts(generated: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """``[rows, vocab]`` float32 counts of each token in each row of ``generated``."""
    counts = torch.zeros(generated.shape[0], vocab_size, device=generated.device)
    return counts.scatter_add_(1, generated, torch.ones_like(generated, dtype=counts.dtype))


def penalties(
    counts: torch.Tensor, presence: torch.Tensor, frequency: torch.Tensor
) -> torch.Tensor:
    """What OpenAI's penalties subtract from each logit, given the generated-token counts."""
    return counts * frequency + (counts > 0).to(counts.dtype) * presence


def penalise(
    logits: torch.Tensor, counts: torch.Tensor, presence: torch.Tensor, frequency: torch.Tensor
) -> torch.Tensor:
    """OpenAI's presence and frequency penalties, given each row's generated-token counts."""
    return logits - penalties(counts, presence, frequency)


def apply_penalties(
    logits: torch.Tensor, generated: torch.Tensor, presence: torch.Tensor, frequency: torch.Tensor
) -> torch.Tensor:
    """OpenAI's presence and frequency penalties over the tokens generated so far."""
    if generated.shape[1] == 0:
        return logits
    return penalise(logits, token_counts(generated, logits.shape[1]), presence, frequency)


def keep_top_p(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Mask every token outside the row's nucleus, found by sorting the whole vocabulary.

    The reference ``RowSampler.sample`` keeps to (``worker.nucleus``); top_p 1 keeps all.
    """
    rows = (top_p < 1.0).squeeze(1).tolist()
    if not any(rows):
        return logits
    at = torch.tensor([i for i, r in enumerate(rows) if r], dtype=torch.long)
    values, ids = full_rank(logits[at].softmax(dim=-1))
    count = kept(values, top_p[at])
    drop = torch.arange(values.shape[1]).unsqueeze(0) >= count.unsqueeze(1)
    masked = torch.zeros_like(values).masked_fill(drop, float("-inf"))
    out = logits.clone()
    out[at] = logits[at] + torch.zeros_like(masked).scatter(1, ids, masked)
    return out


def finish_reason(
    row: GrowingText | None,
    generated: list[int],
    sampling: SamplingParams,
    eos: Collection[int],
    past_deadline: bool,
) -> FinishReason | None:
    """Why a row is done after its latest token (None: it goes on).

    Stopping a row at its deadline keeps a worker from spending compute on an answer nobody
    waits for any more. ``generated`` holds the row's tokens only, never its prompt; ``row``
    is their text, brought up to date here when the row has stop strings: only the text the
    latest tokens added, with what a stop string may begin before it, is searched.
    """
    if generated and generated[-1] in eos:
        return "eos"
    if len(generated) >= sampling.max_tokens:
        return "length"
    if _stopped(row, generated, sampling.stop):
        return "stop"
    if past_deadline:
        return "deadline"
    return None


def _stopped(row: GrowingText | None, generated: list[int], stops: Sequence[str]) -> bool:
    if not stops or row is None or not row.update(generated):
        return False  # no stop strings, or no new text since the last look
    return any(s and s in row.recent(len(s)) for s in stops)
