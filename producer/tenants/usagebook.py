"""The usage book: every front end's copy of the usage ledger, read from the usage topic.

It holds each bucket's latest totals (``UsageBucket``: a key's usage of a model, interactive or
batch, in one minute) and answers what the Usage and Costs APIs, the CLI and the limits ask:
the buckets of a period, a key's spend in its budget period, a key's tokens in the last minute.
Only committed records are read, so the book shows what the ledger's writer committed, once.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterable

from pydantic import ValidationError

from producer.tenants.table import Table
from schemas.kafka import Record
from schemas.settings import Settings
from schemas.topics import Topics
from schemas.usage import BUCKET_S, CURSOR_KEY, UsageBucket, UsageCursor, minute_of


class UsageBook:
    """The ledger's buckets as the usage topic says, kept current by one background reader."""

    def __init__(self, settings: Settings) -> None:
        self.buckets: dict[bytes, UsageBucket] = {}
        self.cursor = UsageCursor()
        self._by_key: dict[str, dict[bytes, UsageBucket]] = defaultdict(dict)
        # Per key id, its budget period last asked about ([start, end)) and the spend in it,
        # kept current as buckets change: one a key, so a bucket's change updates one sum.
        self._spend: dict[str, tuple[float, float, float]] = {}
        # Interactive tokens of (key id, minute), every model together: the tpm limit's count.
        self._minutes: dict[tuple[str, int], int] = defaultdict(int)
        usage = Topics(settings.topic_prefix).usage
        self._table = Table(settings, "kc-usage-book", usage, self._take)

    @property
    def ready(self) -> bool:
        """Whether the ledger as committed at start-up has been read."""
        return self._table.ready

    async def start(self) -> None:
        """Connect and start reading."""
        await self._table.start()

    async def loaded(self, timeout_s: float = 30.0) -> None:
        """Wait until ``ready``."""
        await self._table.loaded(timeout_s)

    async def stop(self) -> None:
        """Stop reading."""
        await self._table.stop()

    def select(
        self,
        start: float,
        end: float,
        *,
        key_ids: Iterable[str] | None = None,
        models: Iterable[str] | None = None,
        batch: bool | None = None,
    ) -> list[UsageBucket]:
        """The buckets whose minute starts in ``[start, end)``, filtered, oldest first."""
        wanted_models = set(models) if models is not None else None
        if key_ids is None:
            pool: Iterable[UsageBucket] = self.buckets.values()
        else:
            pool = [b for k in set(key_ids) for b in self._by_key.get(k, {}).values()]
        chosen = [
            b
            for b in pool
            if start <= b.start < end
            and (wanted_models is None or b.model in wanted_models)
            and (batch is None or b.batch == batch)
        ]
        return sorted(chosen, key=lambda b: (b.start, b.key_id, b.model, b.batch))

    def spend(self, key_id: str, start: float, end: float) -> float:
        """A key's cost (USD) in the minutes that start in ``[start, end)``."""
        held = self._spend.get(key_id)
        if held is None or held[:2] != (start, end):
            mine = self._by_key.get(key_id, {}).values()
            held = (start, end, sum(b.cost for b in mine if start <= b.start < end))
            self._spend[key_id] = held
        return held[2]

    def tokens_last_minute(self, key_id: str, now: float) -> float:
        """A key's tokens (input and output) over the last 60 s, interactive only: this
        minute's and the part of the minute before that the window still covers."""
        this = minute_of(now)
        weight = 1.0 - (now - this) / BUCKET_S
        earlier = self._minutes.get((key_id, this - BUCKET_S), 0)
        return self._minutes.get((key_id, this), 0) + earlier * weight

    def _take(self, record: Record) -> None:
        if record.key == CURSOR_KEY:
            # A cursor of a later version: the writer that wrote it reads it.
            with contextlib.suppress(ValidationError):
                self.cursor = UsageCursor.model_validate_json(record.value or b"")
            return
        try:
            bucket = UsageBucket.model_validate_json(record.value or b"")
        except ValidationError:
            return  # not a bucket of this version: nothing to count
        self.apply(bucket)

    def apply(self, bucket: UsageBucket) -> None:
        """Take a bucket's latest totals (read back, or just committed by this front end)."""
        key = bucket.record_key
        before = self.buckets.get(key)
        self.buckets[key] = bucket
        self._by_key[bucket.key_id][key] = bucket
        if not bucket.batch:
            tokens = bucket.input_tokens + bucket.output_tokens
            held = before.input_tokens + before.output_tokens if before is not None else 0
            self._minutes[(bucket.key_id, bucket.start)] += tokens - held
        delta = bucket.cost - (before.cost if before is not None else 0.0)
        period = self._spend.get(bucket.key_id)
        if delta and period is not None and period[0] <= bucket.start < period[1]:
            self._spend[bucket.key_id] = (period[0], period[1], period[2] + delta)
