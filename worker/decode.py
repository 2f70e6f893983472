"""A running batch over a KV cache: rows join and leave while it decodes (continuous batching).

Layout: every row's tokens end at the cache's last written column; a row's padding is on its
left and masked out, and each row's positions count its own tokens only, so a row decodes the
same tokens whatever it shares the batch with (up to float rounding). New rows are prefilled
together (left-padded) and written into the cache's free rows, ending at the same column;
finished rows are dropped at once (``worker.kvcache``: a preallocated cache that each step
writes one column of, in place, and that moves only when joining rows need more room).
``fits`` keeps ``rows x longest row life`` (prompt + max_tokens each) under a token budget.
Rows admitted together that start alike share the prefill of their common start
(``worker.prefix``): it sits in the leftmost columns, each row's own tokens right-aligned
after it, with the padding between masked out. A step's forward runs eagerly, compiled per row
bucket or as CUDA graphs (``worker.forward``, ``StepMode``); with ``overlap`` its tokens are
read back a step late (``worker.readback``), so the rows that finish at step n are returned by
step n + 1, and the token step n + 1 drew for them is dropped.

transformers' own continuous batching (5.x) carries per-request temperature and top_p but not
presence/frequency penalties, stop strings or deadlines, hence this loop. Everything here
blocks: it runs in the backend's inference thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from worker.forward import StepMode, step_of
from worker.kvcache import SlotCache, cache_argument, empty_cache
from worker.prefix import Prefix, PrefixCache, common_length
from worker.readback import Pending, Readback
from worker.sampling import FinishReason, Penalty, RowSampler, SamplingParams, finish_reason
from worker.text import GrowingText


@dataclass(slots=True, eq=False)
class Row:
    """One sequence: the caller's handle, its prompt, its parameters and what it generated."""

    handle: Any
    prompt: list[int]
    sampling: SamplingParams
    deadline: float | None = None
    tokens: list[int] = field(default_factory=list)
    started: float = 0.0
    seed: int = 0  # of the row's random draws (``worker.draws.task_seed``)
    text: GrowingText | None = None  # its text, kept up to date where stop strings need it

    @property
    def life(self) -> int:
        """The most cache columns this row can ever need."""
        return len(self.prompt) + self.sampling.max_tokens


@dataclass(frozen=True, slots=True)
class Finished:
    """A row that left the batch, and why."""

    row: Row
    reason: FinishReason


class DecodeBatch:
    """The rows decoding together, their KV cache, mask, positions and sampling columns."""

    def __init__(
        self,
        model: Any,
        *,
        eos: Collection[int],
        pad: int,
        decode: Callable[[list[int]], str],
        max_rows: int,
        token_budget: int,
        prefixes: PrefixCache | None = None,
        mode: StepMode | None = None,
    ) -> None:
        self._model = model
        self._keyword = cache_argument(model)
        # Decode steps only: every prefill has a new shape, and runs once.
        self.mode = StepMode() if mode is None else mode
        self._step = step_of(model, self.mode, max_rows)
        self._eos = frozenset(eos)
        self._pad = pad
        self._decode = decode
        self._max_rows = max_rows
        self._budget = token_budget
        self._limits = (max_rows, token_budget)
        self._device = next(model.parameters()).device
        self._vocab = int(model.config.vocab_size)
        self.rows: list[Row] = []
        self._cache: SlotCache | None = None
        self._next = torch.zeros(0, dtype=torch.long, device=self._device)
        self._sampler = RowSampler.of([], self._device)
        self._penalty: Penalty | None = None
        self._index = torch.zeros(0, dtype=torch.long, device=self._device)  # tokens so far
        # Per row, the columns from its first used one to the last: known on the host, so that
        # moving the cache's live columns never asks the device.
        self._spans: list[int] = []
        self._prefixes = PrefixCache() if prefixes is None else prefixes
        self.prefill_tokens_skipped = 0  # prompt tokens a shared prefix spared the prefill
        self._readback = Readback(self._device) if self.mode.overlap else None
        # The latest step's rows and tokens on their way to the host (``overlap``).
        self._inflight: tuple[list[Row], Pending] | None = None

    @property
    def cache_tokens(self) -> int:
        """Token slots the running rows span (rows x longest row so far); the buffers hold
        more, to grow into."""
        return len(self.rows) * max(self._spans, default=0)

    def fits(self, joining: Sequence[Row]) -> bool:
        """Whether these rows can join without passing the row cap or the token budget."""
        rows = [*self.rows, *joining]
        if len(rows) > self._max_rows:
            return False
        # A lone row is taken whatever its size (the context check bounds it), or a request
        # bigger than the budget would wait for ever.
        return len(rows) == 1 or len(rows) * max(r.life for r in rows) <= self._budget

    def admit(self, joining: Sequence[Row]) -> list[Finished]:
        """Prefill the joining rows, merge them in, and sample their first tokens."""
        if not joining:
            return []
        self._settle()  # rows' tokens complete: the penalty counts are rebuilt from them
        now = time.time()
        for row in joining:
            row.started = time.perf_counter()
            row.text = GrowingText(self._decode)
        prefill, mask, logits, spans = self._prefill(joining)
        seeds = [r.seed for r in joining]
        sampler = RowSampler.of([r.sampling for r in joining], self._device, seeds)
        drawn = torch.zeros(len(joining), dtype=torch.long, device=self._device)
        first, tokens = sampler.sample(logits, None, drawn)
        for row, token in zip(joining, tokens, strict=True):
            row.tokens.append(token)
        self._merge(prefill, mask, first, sampler, joining)
        self._spans.extend(spans)
        return self._retire(now)

    def step(self) -> list[Finished]:
        """Decode one token for every row; drop and return the rows that finished (with
        ``overlap``: by the tokens read so far, the latest step's still on their way)."""
        if not self.rows:
            return []
        now = time.time()
        cache = self._cache
        assert cache is not None  # rows run
        with torch.inference_mode():
            scores = self._step(self._next, cache)
        cache.advance()
        penalty = None if self._penalty is None else self._penalty.penalty
        if self._readback is None:
            self._next, tokens = self._draw(scores, penalty)
            self._advance()
            for row, token in zip(self.rows, tokens, strict=True):
                row.tokens.append(token)
        else:
            self._next = self._draw_on_device(scores, penalty)
            self._advance()
            earlier = self._inflight
            self._inflight = (list(self.rows), self._readback.start(self._next))
            if earlier is not None:
                self._collect(*earlier)
        return self._retire(now)

    def _draw(
        self, scores: torch.Tensor, penalty: torch.Tensor | None
    ) -> tuple[torch.Tensor, list[int]]:
        """Each row's next token, on the device and read back (a method: profiles time it)."""
        return self._sampler.sample(scores, penalty, self._index)

    def _draw_on_device(self, scores: torch.Tensor, penalty: torch.Tensor | None) -> torch.Tensor:
        """Each row's next token, left on the device."""
        return self._sampler.sample_on_device(scores, penalty, self._index)

    def _advance(self) -> None:
        """Every row drew its token: count it."""
        self._index += 1
        self._spans = [s + 1 for s in self._spans]
        if self._penalty is not None:
            self._penalty.add(self._next, self._sampler)

    def _collect(self, rows: list[Row], pending: Pending) -> None:
        """Give the rows of a step read late their tokens; rows gone since get none."""
        assert self._readback is not None  # only overlapped steps are read late
        running = {id(r) for r in self.rows}
        for row, token in zip(rows, self._readback.read(pending), strict=True):
            if id(row) in running:
                row.tokens.append(token)

    def _settle(self) -> None:
        """Read the step in flight, if any: every row then holds all its tokens."""
        if self._inflight is not None:
            rows, pending = self._inflight
            self._inflight = None
            self._collect(rows, pending)

    def remove(self, doomed: Callable[[Row], bool]) -> list[Row]:
        """Drop the rows ``doomed`` picks (cancelled requests); returns them."""
        gone = [r for r in self.rows if doomed(r)]
        if gone:
            self._drop([i for i, r in enumerate(self.rows) if not doomed(r)])
        return gone

    def clear(self) -> list[Row]:
        """Drop every row (after a failure); returns them."""
        rows = self.rows
        self._drop([])
        self._cache = None  # a failed step may have left it half written
        if self._inflight is not None:
            assert self._readback is not None
            self._readback.drop(self._inflight[1])
            self._inflight = None
        return rows

    def _prefill(self, joining: Sequence[Row]) -> tuple[Any, torch.Tensor, torch.Tensor, list[int]]:
        prompts = [r.prompt for r in joining]
        prefix = self._shared_prefix(prompts)
        shared = len(prefix.tokens) if prefix else 0
        own = [p[shared:] for p in prompts]
        width = max(len(o) for o in own)
        ids = [[self._pad] * (width - len(o)) + o for o in own]
        mask = [[1] * shared + [0] * (width - len(o)) + [1] * len(o) for o in own]
        input_ids = torch.tensor(ids, dtype=torch.long, device=self._device)
        attention = torch.tensor(mask, dtype=torch.long, device=self._device)
        cache = DynamicCache(config=self._model.config)
        if prefix is not None:
            rows = len(joining)
            for layer, (keys, values) in enumerate(prefix.kv):
                cache.update(keys.expand(rows, -1, -1, -1), values.expand(rows, -1, -1, -1), layer)
        with torch.inference_mode():
            out = self._model(
                input_ids=input_ids,
                attention_mask=prefill_mask(attention, shared),
                position_ids=(attention.cumsum(dim=1) - 1).clamp(min=0)[:, shared:],
                use_cache=True,
                logits_to_keep=1,
                **{self._keyword: cache},
            )
        spans = [shared + width if shared else len(o) for o in own]
        return cache, attention, out.logits[:, -1, :], spans

    def _shared_prefix(self, prompts: list[list[int]]) -> Prefix | None:
        """A kept prefix all the prompts start with, or their common start computed now."""
        kept = self._prefixes.find(prompts)
        common = common_length(prompts) if len(prompts) > 1 else 0
        gain = common - (len(kept.tokens) if kept else 0)
        if gain < self._prefixes.min_tokens:
            if kept is not None:
                self.prefill_tokens_skipped += len(kept.tokens) * len(prompts)
            return kept
        tokens = tuple(prompts[0][:common])
        cache: Any = DynamicCache(config=self._model.config)
        with torch.inference_mode():
            self._model(
                input_ids=torch.tensor([tokens], dtype=torch.long, device=self._device),
                use_cache=True,
                logits_to_keep=1,
                **{self._keyword: cache},
            )
        prefix = Prefix(tokens, tuple((layer.keys, layer.values) for layer in cache.layers))
        self._prefixes.add(prefix)
        self.prefill_tokens_skipped += common * (len(prompts) - 1)
        return prefix

    def _merge(
        self,
        prefill: Any,
        mask: torch.Tensor,
        first: torch.Tensor,
        sampler: RowSampler,
        joining: Sequence[Row],
    ) -> None:
        layers = [(layer.keys, layer.values) for layer in prefill.layers]
        rows, width = mask.shape
        # Columns every row may still write: one a step until its last token.
        future = max(r.sampling.max_tokens - len(r.tokens) for r in [*self.rows, *joining])
        if self._cache is None:
            self._cache = empty_cache(layers, rows, width + future, self._limits)
        elif not self._cache.fits(rows, width, future):
            span = max(self._spans, default=0)
            self._cache = self._cache.moved(rows, width, future, span, self._limits)
        self._cache.place(layers, mask)
        self._sampler = self._sampler.join(sampler) if self.rows else sampler
        self._next = torch.cat([self._next, first])
        self._index = torch.cat([self._index, torch.ones_like(first)])
        self.rows.extend(joining)
        self._penalty = (
            Penalty.of([r.tokens for r in self.rows], self._sampler, self._vocab)
            if self._sampler.penalised
            else None
        )

    def _retire(self, now: float) -> list[Finished]:
        """Drop the rows that are done after their latest token; return them."""
        finished: list[Finished] = []
        keep: list[int] = []
        for i, row in enumerate(self.rows):
            past = row.deadline is not None and now > row.deadline
            reason = finish_reason(row.text, row.tokens, row.sampling, self._eos, past)
            if reason is None:
                keep.append(i)
            else:
                finished.append(Finished(row, reason))
        if finished:
            self._drop(keep)
        return finished

    def _drop(self, keep: list[int]) -> None:
        """Keep the rows at ``keep``; the cache fills gaps with rows from its end."""
        order = [] if self._cache is None else self._cache.keep(keep)
        self.rows = [self.rows[i] for i in order]
        self._sampler = self._sampler.select(order)
        self._spans = [self._spans[i] for i in order]
        at = torch.tensor(order, dtype=torch.long, device=self._device)
        self._next = self._next[at]
        self._index = self._index[at]
        if self._penalty is not None:
            self._penalty = self._penalty.select(at) if self._sampler.penalised else None


def prefill_mask(attention: torch.Tensor, shared: int) -> torch.Tensor:
    """The prefill's 4D mask (True: attend): causal, padding hidden, built here because
    transformers asks the device whether a 2D mask has any padding (a sync) to skip it.

    Every query sees its own column too, so a padding query (which sees nothing else) gives
    finite keys and values rather than NaN; they are masked out for every real token.
    """
    columns = attention.shape[1]
    width = columns - shared
    device = attention.device
    causal = torch.ones(width, columns, dtype=torch.bool, device=device).tril(diagonal=shared)
    own = torch.cat(
        [
            torch.zeros(width, shared, dtype=torch.bool, device=device),
            torch.eye(width, dtype=torch.bool, device=device),
        ],
        dim=1,
    )
    return (causal & attention.bool()[:, None, None, :]) | own
