"""The usage ledger's records: per-minute totals of committed results, and the ledger's cursor.

The compacted usage topic holds one ``UsageBucket`` per (key id, model, batch or not, minute)
that saw a result, keyed by ``UsageBucket.record_key``; each record carries the bucket's whole
totals so far (compaction keeps the last). The ledger's writer commits the buckets it changed
and its ``UsageCursor`` (how far it has read each results partition) in one transaction, so a
result is counted once whatever fails (docs/tenants.md).

What counts, as the caller was told: a result is one model request, and its prompt tokens, once
per prompt (the first of the ``n`` choices of a prompt: ``choice_index % choices_per_prompt ==
0``); a failed result counts as a request and a failure, with no tokens. Costs are priced when
counted, from the registry's ``input_cost_per_token`` and ``output_cost_per_token``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

BUCKET_S = 60
CURSOR_KEY = b"cursor"


def minute_of(epoch_s: float) -> int:
    """The start (epoch seconds) of the minute ``epoch_s`` falls in."""
    return int(epoch_s // BUCKET_S) * BUCKET_S


class UsageBucket(BaseModel):
    """One minute of one key's usage of one model, interactive or batch: its totals so far."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = 1
    kind: Literal["bucket"] = "bucket"
    key_id: str  # "" for results no key is known for (a producer that is not ours)
    model: str
    batch: bool
    start: int  # epoch seconds, a multiple of BUCKET_S
    requests: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    input_cost: float = 0.0  # USD
    output_cost: float = 0.0

    @property
    def record_key(self) -> bytes:
        """The Kafka key: one record per bucket."""
        return bucket_key(self.key_id, self.model, self.batch, self.start)

    @property
    def cost(self) -> float:
        """Input and output cost together (USD)."""
        return self.input_cost + self.output_cost


def bucket_key(key_id: str, model: str, batch: bool, start: int) -> bytes:
    """The record key of one bucket."""
    return f"{key_id}|{model}|{int(batch)}|{start}".encode()


class UsageCursor(BaseModel):
    """How far the ledger has counted: the next offset of each results partition it reads."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = 1
    kind: Literal["cursor"] = "cursor"
    offsets: dict[str, int] = Field(default_factory=dict)  # "topic:partition" -> next offset
