"""Bucket sizes for static-shape decode steps: rows and cache columns rounded up a short ladder.

A compiled step (``torch.compile`` with static shapes) or a captured CUDA graph serves one set of
input shapes; a batch whose rows come and go would otherwise compile or capture again for every
row count. So a step's rows are padded up to the next rung of a ladder, the powers of two and
one and a half times each (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, ...): at most a third
of a step's rows are padding, and a batch of up to 32 rows steps at one of ten shapes. vLLM
captures more sizes (1, 2, 4, then every multiple of 8 up to 256): a capture costs it
milliseconds, while inductor compiles a step of SmolLM2-135M in ~45 s on two CPU cores, so
fewer rungs here. The KV cache's column capacity climbs the same ladder (from 64 columns), so
its width takes few values too.
"""

from __future__ import annotations

from collections.abc import Iterator

# The narrowest cache: a few chat prompts' worth of columns.
MIN_COLUMNS = 64


def _ladder() -> Iterator[int]:
    yield from (1, 2)
    power = 2
    while True:
        yield power + power // 2
        power *= 2
        yield power


def rung(n: int) -> int:
    """The smallest rung of the ladder at least ``n``."""
    return next(r for r in _ladder() if r >= n)


def rung_below(n: int) -> int:
    """The largest rung of the ladder at most ``n`` (1 for ``n`` under 1)."""
    below = 1
    for r in _ladder():
        if r > n:
            return below
        below = r
    raise AssertionError("the ladder is endless")  # pragma: no cover


def row_bucket(rows: int) -> int:
    """The rows a step of ``rows`` live rows runs at."""
    return rung(rows)


def column_bucket(columns: int) -> int:
    """The column capacity of a cache that needs ``columns`` (at least ``MIN_COLUMNS``)."""
    return rung(max(columns, MIN_COLUMNS))


def row_buckets(most: int) -> list[int]:
    """Every row bucket a batch of at most ``most`` rows steps at, smallest first."""
    buckets = []
    for r in _ladder():
        buckets.append(r)
        if r >= most:
            return buckets
    raise AssertionError("the ladder is endless")  # pragma: no cover
