"""A managed key's limits, decided: pure functions of the key's record and what was counted.

- ``rpm_limit``: requests admitted in the last 60 s, by every front end (``admissions``).
- ``tpm_limit``: tokens of the key's committed interactive results in the last 60 s (the
  usage ledger), checked before a request is published, as LiteLLM's proxy does: requests in
  flight are counted when they are answered.
- ``max_budget`` over ``budget_duration``: the key's spend (the ledger's costs) in the current
  budget period. A batch is checked at creation against its most cost: every line's most
  prompt tokens and its ``max_tokens``, at the models' prices, with the most cost of the key's
  running batches held as spent until they end.

Past a limit a request is refused before anything is published: 429 with OpenAI's codes
(``rate_limit_exceeded``, ``insufficient_quota``) and ``Retry-After``, the seconds until the
window frees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from schemas.keys import KeyRecord
from schemas.registry import Registry

WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class Overrun:
    """A limit a request would pass: the error code, what to tell the caller, when to retry."""

    code: str  # rate_limit_exceeded | insufficient_quota
    message: str
    retry_after_s: int


def check_tokens(record: KeyRecord, tokens: float, now: float) -> Overrun | None:
    """The tpm limit, with ``tokens`` the key's tokens in the last 60 s."""
    if record.tpm_limit is None or tokens < record.tpm_limit:
        return None
    # The count is per minute: the minute before weighs less each second, and is gone at the
    # next minute's start.
    retry = max(1, math.ceil(WINDOW_S - now % WINDOW_S))
    return Overrun(
        "rate_limit_exceeded",
        f"tpm_limit: {int(tokens)} tokens in the last minute, the key's limit is "
        f"{record.tpm_limit}; retry after {retry} s",
        retry,
    )


def check_requests(record: KeyRecord, admitted: list[float], now: float) -> Overrun | None:
    """The rpm limit, with ``admitted`` the times of the key's requests in the last 60 s,
    oldest first."""
    if record.rpm_limit is None or len(admitted) < record.rpm_limit:
        return None
    frees = admitted[len(admitted) - record.rpm_limit] + WINDOW_S if record.rpm_limit else now
    retry = max(1, math.ceil(frees - now))
    return Overrun(
        "rate_limit_exceeded",
        f"rpm_limit: {len(admitted)} requests in the last minute, the key's limit is "
        f"{record.rpm_limit}; retry after {retry} s",
        retry,
    )


def check_budget(record: KeyRecord, spend: float, now: float, more: float = 0.0) -> Overrun | None:
    """The budget: ``spend`` (USD) in the current period, and ``more`` about to be spent (a
    batch's most cost); refused when the period's spend would pass ``max_budget``."""
    period = record.budget_window(now)
    if period is None or record.max_budget is None:
        return None
    if more == 0.0 and spend < record.max_budget:
        return None
    if more > 0.0 and spend + more <= record.max_budget:
        return None
    _, end = period
    retry = max(1, math.ceil(end - now)) if math.isfinite(end) else 86400
    when = f"; the budget resets in {retry} s" if math.isfinite(end) else ""
    wanted = f" and this batch may cost up to ${more:.6f}" if more else ""
    return Overrun(
        "insufficient_quota",
        f"max_budget: the key spent ${spend:.6f} of ${record.max_budget:.6f}{wanted}{when}",
        retry,
    )


def most_cost(tokens: dict[str, tuple[int, int]], registry: Registry) -> float:
    """The cost (USD) of ``tokens`` (per model: input, output) at the models' prices."""
    cost = 0.0
    for model, (prompt, completion) in tokens.items():
        if model in registry:
            spec = registry.get(model)
            cost += prompt * spec.input_cost_per_token + completion * spec.output_cost_per_token
    return cost
