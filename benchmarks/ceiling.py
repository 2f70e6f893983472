"""The ceiling of a decode loop: the model's forward passes alone, on the same work.

The prompts go in waves of ``concurrency`` rows: one prefill of a wave's prompts (left-padded,
as the decode loop does it), then a decode step per new token over a preallocated cache
(``worker.kvcache``), every row fed a fixed token. No sampling, no rows joining or leaving, no
text, no Kafka: only forward passes (and the prefill's copy into the cache). A system's tokens/s
over this one's is the share of the model's own throughput it keeps; the rest is what it spends
around the forward passes. It needs torch and transformers only (``benchmarks.gpu`` runs it
where nothing else is installed).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache

from benchmarks.stats import Run
from worker.buckets import column_bucket, row_bucket
from worker.decode import prefill_mask
from worker.forward import StepMode, step_of
from worker.kvcache import SlotCache, cache_argument

SYSTEM = "forward alone (ceiling)"


class Ceiling:
    """The forward passes alone, ``concurrency`` rows at a time, over one reused cache (a
    graphed step then captures once, not once a wave)."""

    def __init__(self, model: Any, concurrency: int, mode: StepMode | None = None) -> None:
        self._model = model
        self._concurrency = concurrency
        self._step = step_of(model, mode or StepMode(), concurrency)
        self._cache: SlotCache | None = None
        self._device = next(model.parameters()).device

    def run(self, prompts: Sequence[list[int]], new_tokens: int) -> Run:
        """Every prompt's prefill and ``new_tokens - 1`` decode steps."""
        run = Run("B1", SYSTEM, f"c={self._concurrency}")
        began = time.perf_counter()
        for start in range(0, len(prompts), self._concurrency):
            wave = prompts[start : start + self._concurrency]
            started = time.perf_counter()
            self._wave(wave, new_tokens)
            synchronize(self._device)
            for _ in wave:
                run.ok(time.perf_counter() - started, new_tokens)
        run.elapsed_s = time.perf_counter() - began
        return run

    def _wave(self, prompts: Sequence[list[int]], new_tokens: int) -> None:
        width = max(len(p) for p in prompts)
        ids = [[0] * (width - len(p)) + p for p in prompts]
        mask = [[0] * (width - len(p)) + [1] * len(p) for p in prompts]
        attention = torch.tensor(mask, device=self._device)
        with torch.inference_mode():
            layers = _prefill(self._model, torch.tensor(ids, device=self._device), attention)
            cache = self._cache
            if cache is not None:
                cache.keep([])
            if cache is None or not cache.fits(len(prompts), width, new_tokens):
                rows, columns = row_bucket(len(prompts)), column_bucket(width + new_tokens)
                cache = self._cache = SlotCache(layers, rows, columns)
            cache.place(layers, attention)
            tokens = torch.tensor([i[-1] for i in ids], device=self._device)
            for _ in range(new_tokens - 1):
                self._step(tokens, cache)
                cache.advance()


def _prefill(
    model: Any, ids: torch.Tensor, attention: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The prompts' keys and values per layer (left-padded, as the decode loop prefills)."""
    prefill: Any = DynamicCache(config=model.config)
    model(
        input_ids=ids,
        attention_mask=prefill_mask(attention, 0),
        position_ids=(attention.cumsum(dim=1) - 1).clamp(min=0),
        use_cache=True,
        logits_to_keep=1,
        **{cache_argument(model): prefill},
    )
    return [(layer.keys, layer.values) for layer in prefill.layers]


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a timer's end must include it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
