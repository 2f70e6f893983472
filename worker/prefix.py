"""Shared prompt prefixes: computed once, kept, and reused by every row that starts with them.

Chat traffic repeats itself at the start: the chat template's system turn, an application's
instructions. A group of rows admitted together that share a long enough start has it
prefilled once (one row) instead of once per row, and the prefix's KV stays in a small LRU so
later rows that start the same way skip it too (vLLM calls this automatic prefix caching).
A prefix's keys and values depend only on its tokens and their positions (0..n-1), so a row
decodes the same tokens with or without it (up to float rounding).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

# Shorter shared starts are not worth a forward pass of their own.
MIN_PREFIX_TOKENS = 16
# The LRU holds at most this many prefixes and this many tokens in all (SmolLM2-135M: ~23 KB
# of KV per token, so 8,192 tokens are ~190 MB).
MAX_PREFIXES = 8
MAX_PREFIX_TOKENS = 8192


@dataclass(frozen=True, slots=True)
class Prefix:
    """The tokens of a prefix and its keys and values per layer, for one row."""

    tokens: tuple[int, ...]
    kv: tuple[tuple[torch.Tensor, torch.Tensor], ...]


def common_length(prompts: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every prompt shares, leaving each at least one of its own."""
    limit = min(len(p) for p in prompts) - 1
    first = prompts[0]
    n = 0
    while n < limit and all(p[n] == first[n] for p in prompts):
        n += 1
    return max(n, 0)


class PrefixCache:
    """The recently used shared prefixes, least recently used first out."""

    def __init__(
        self,
        min_tokens: int = MIN_PREFIX_TOKENS,
        max_prefixes: int = MAX_PREFIXES,
        max_tokens: int = MAX_PREFIX_TOKENS,
    ) -> None:
        self.min_tokens = min_tokens
        self._max_prefixes = max_prefixes
        self._max_tokens = max_tokens
        self._entries: OrderedDict[tuple[int, ...], Prefix] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def find(self, prompts: Sequence[Sequence[int]]) -> Prefix | None:
        """The longest kept prefix that every prompt starts with (and goes beyond)."""
        best: Prefix | None = None
        for tokens, prefix in self._entries.items():
            n = len(tokens)
            if (best is None or n > len(best.tokens)) and all(
                len(p) > n and tuple(p[:n]) == tokens for p in prompts
            ):
                best = prefix
        if best is not None:
            self._entries.move_to_end(best.tokens)
        return best

    def add(self, prefix: Prefix) -> None:
        """Keep a prefix, pushing out the least recently used past the bounds."""
        if len(prefix.tokens) > self._max_tokens:
            return
        self._entries[prefix.tokens] = prefix
        self._entries.move_to_end(prefix.tokens)
        while len(self._entries) > self._max_prefixes or self.tokens > self._max_tokens:
            self._entries.popitem(last=False)

    @property
    def tokens(self) -> int:
        """Tokens kept in all."""
        return sum(len(t) for t in self._entries)
