"""Per-row sampling for a batch: penalties, temperature, top_p, and when each row is done.

``generate`` applies one temperature and one top_p to the whole batch; a batch of tasks needs
them per row. ``RowSampler`` is a logits processor that does, in order, what OpenAI documents:

    logit[j] -= count[j] * frequency_penalty + (count[j] > 0) * presence_penalty

(``count`` = times token j was generated so far in this row, the prompt excluded), then divides
by the row's temperature and keeps the row's top_p nucleus. A row with temperature 0 keeps only
its arg-max, so it decodes greedily even though the batch samples.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from schemas.wire import Sampling


class RowSampler:
    """Logits processor applying each row's penalties, temperature and top_p."""

    def __init__(self, rows: Sequence[Sampling], prompt_len: int, device: torch.device) -> None:
        def column(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=device).unsqueeze(1)

        self._prompt_len = prompt_len
        self._temperature = column([r.temperature for r in rows])
        self._greedy = self._temperature.squeeze(1) == 0
        self._top_p = column([r.top_p for r in rows])
        self._presence = column([r.presence_penalty for r in rows])
        self._frequency = column([r.frequency_penalty for r in rows])
        self._penalised = any(r.presence_penalty or r.frequency_penalty for r in rows)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Return the row-wise adjusted scores for the next token."""
        logits = scores.float()
        if self._penalised:
            logits = apply_penalties(
                logits, input_ids[:, self._prompt_len :], self._presence, self._frequency
            )
        logits = logits / torch.where(self._greedy.unsqueeze(1), 1.0, self._temperature)
        logits = keep_top_p(logits, self._top_p)
        if bool(self._greedy.any()):
            logits = _only_argmax(logits, self._greedy)
        return logits  # type: ignore[return-value]


def apply_penalties(
    logits: torch.Tensor, generated: torch.Tensor, presence: torch.Tensor, frequency: torch.Tensor
) -> torch.Tensor:
    """OpenAI's presence and frequency penalties over the tokens generated so far."""
    if generated.shape[1] == 0:
        return logits
    counts = torch.zeros_like(logits).scatter_add_(
        1, generated, torch.ones_like(generated, dtype=logits.dtype)
    )
    return logits - counts * frequency - (counts > 0).to(logits.dtype) * presence


def keep_top_p(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Mask every token outside the smallest set whose probability reaches the row's top_p."""
    ordered, index = logits.sort(dim=-1, descending=True)
    probs = ordered.softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # mass of the tokens ranked above each token
    drop = (before >= top_p) & (top_p < 1.0)  # top_p 1 keeps all, whatever the float error
    drop[:, 0] = False  # the most likely token always stays (top_p = 0 means greedy)
    ordered = ordered.masked_fill(drop, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(1, index, ordered)


def _only_argmax(logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    best = logits.argmax(dim=-1, keepdim=True)
    greedy = torch.full_like(logits, float("-inf")).scatter(1, best, 0.0)
    return torch.where(rows.unsqueeze(1), greedy, logits)


class RowStopper:
    """Stopping criterion: a row is done at its max_tokens, a stop string, or its deadline.

    Stopping a row at its deadline (epoch seconds; None for none) keeps a worker from spending
    compute on an answer nobody waits for any more.
    """

    def __init__(
        self,
        rows: Sequence[Sampling],
        prompt_len: int,
        decode: Callable[[list[int]], str],
        deadlines: Sequence[float | None] | None = None,
    ) -> None:
        self._max = [r.max_tokens for r in rows]
        self._stops = [r.stop for r in rows]
        self._prompt_len = prompt_len
        self._decode = decode
        self._deadlines = list(deadlines or [None] * len(rows))

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **_: object
    ) -> torch.BoolTensor:
        """Per row: has it produced enough tokens, or a stop string?"""
        generated = input_ids[:, self._prompt_len :]
        now = time.time()
        done = [
            generated.shape[1] >= limit or (deadline is not None and now > deadline)
            for limit, deadline in zip(self._max, self._deadlines, strict=True)
        ]
        for row, stops in enumerate(self._stops):
            if stops and not done[row]:
                text = self._decode(generated[row].tolist())
                done[row] = any(s in text for s in stops)
        return torch.tensor(done, device=input_ids.device)  # type: ignore[return-value]
