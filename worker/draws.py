"""Per-task random draws: each row's uniforms depend only on its seed and its token index.

A task rerun after a worker died should give the text its early reply already gave the caller,
so a row cannot draw from a generator the whole batch shares (its draws would depend on which
rows ran beside it and in what order). Each row instead owns a counter-based stream: the
uniform for its n-th token is SplitMix64(seed + (n + 1) * golden), computed on the device for
all rows at once (no generator objects, no per-row calls, no host round trip). The seed is the
caller's ``seed`` when given (OpenAI's parameter), else the request id; either way mixed with
the choice index, so the choices of one request differ.
"""

from __future__ import annotations

import hashlib

import torch

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_BITS = 24  # a float32 holds 24 bits exactly, so a uniform is never rounded up to 1.0


def task_seed(request_id: str, choice_index: int, seed: int | None) -> int:
    """The row seed of one task: from the caller's seed if given, else from the request id."""
    source = f"seed:{seed}" if seed is not None else f"request:{request_id}"
    digest = hashlib.blake2b(f"{source}/{choice_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # non-negative, fits an int64


def uniforms(seeds: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Row i's uniform in [0, 1) for its token number ``index[i]`` (``[rows]`` float32)."""
    # int64 arithmetic wraps on overflow, as SplitMix64's uint64 arithmetic does; right shifts
    # are masked because torch shifts int64 arithmetically.
    z = seeds + (index + 1) * _signed(_GOLDEN)
    z = (z ^ _shift(z, 30)) * _signed(_MIX1)
    z = (z ^ _shift(z, 27)) * _signed(_MIX2)
    z = z ^ _shift(z, 31)
    return _shift(z, 64 - _BITS).to(torch.float32) * (2.0**-_BITS)


def reference_uniform(seed: int, index: int) -> float:
    """``uniforms`` for one row in plain Python integers (what the tensor version must give)."""
    z = (seed + (index + 1) * _GOLDEN) & _MASK64
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
    z ^= z >> 31
    return float(z >> (64 - _BITS)) * 2.0**-_BITS


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _shift(z: torch.Tensor, bits: int) -> torch.Tensor:
    """A logical right shift of int64 values."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)
