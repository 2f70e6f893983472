"""A preallocated KV cache for the decode loop's layout: a step writes one column, in place.

Every running row's tokens end at the same column (``worker.decode``), so a decode step writes
one column for all rows: ``index_copy_`` at a column index kept on the device, into per-layer
buffers of ``[row capacity, kv heads, column capacity, head dim]`` allocated up front. A step
attends over the used rows' whole column capacity, the mask hiding the columns a row does not
use, so its shapes stay the same from step to step (what ``torch.compile`` and CUDA graphs
want) and no step copies the cache; ``DynamicCache`` grows every layer by ``torch.cat`` each
step, a copy of the whole cache.

Copies happen only when the batch changes: the joining rows' prefilled keys and values are
written into free rows; a finished row's slot takes the last row (only moved rows are copied);
and when joining rows need more columns than are left on the right (columns run out as the
batch decodes), the live part moves left within the same buffers, or into new ones with room to
spare when the buffers are too small (doubled, ``_capacity``) or far too wide. That growth is
the one place the buffers' ``data_ptr`` changes, so a CUDA graph captured over them stays valid
until then. Capacities are rungs of ``worker.buckets``' ladder: a step padded to a row bucket
always finds its rows in the buffers, and the buffers take few shapes (each a compile).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from transformers import Cache
from transformers.cache_utils import CacheLayerMixin

from worker.buckets import column_bucket, row_bucket, rung_below


class _SlotLayer(CacheLayerMixin):  # type: ignore[no-untyped-call]
    """One layer's buffers; a decode step writes its keys and values at the cursor's column."""

    is_compileable = True

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, cache: SlotCache) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        # Typed names for the buffers (the base class types ``keys`` as optional).
        self.key_buffer, self.value_buffer, self._cache = keys, values, cache
        self.keys, self.values = keys, values
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Never called: the buffers exist before the first step."""

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the step's column in place; return the step's rows' whole buffers (views)."""
        # The step's rows (padding included), from the input's shape: a compiled step then
        # depends on no Python number that changes as rows come and go.
        rows, column = key_states.shape[0], self._cache.column
        keys = self.key_buffer.narrow(0, 0, rows)
        values = self.value_buffer.narrow(0, 0, rows)
        keys.index_copy_(2, column, key_states)
        values.index_copy_(2, column, value_states)
        return keys, values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """The columns attention sees: all of them (the mask hides the unused)."""
        return int(self.key_buffer.shape[2]), 0

    def get_seq_length(self) -> int:
        """Columns written so far."""
        return self._cache.end

    def get_max_length(self) -> int:
        """The column capacity."""
        return int(self.key_buffer.shape[2])


class SlotCache(Cache):
    """The batch's keys, values and mask in fixed buffers; ``rows`` of them in use.

    Columns ``[0, end)`` are written; a decode step writes column ``end`` (``column`` holds it
    on the device, so the step never needs it from the host) and then ``advance`` moves on.
    """

    def __init__(
        self, shapes: Sequence[tuple[torch.Tensor, torch.Tensor]], rows: int, columns: int
    ) -> None:
        like = shapes[0][0]
        self.rows, self.end = 0, 0
        self.column = torch.zeros(1, dtype=torch.long, device=like.device)
        self.mask = torch.zeros(rows, columns, dtype=torch.bool, device=like.device)
        self.slots = [
            _SlotLayer(_buffer(k, rows, columns), _buffer(v, rows, columns), self)
            for k, v in shapes
        ]
        super().__init__(layers=list(self.slots))

    @property
    def capacity(self) -> tuple[int, int]:
        """Rows and columns the buffers hold."""
        return int(self.mask.shape[0]), int(self.mask.shape[1])

    def fits(self, rows: int, width: int, future: int) -> bool:
        """Whether ``rows`` more rows of ``width`` columns join without a move, and every row
        then has ``future`` columns to grow into."""
        capacity_rows, columns = self.capacity
        end = self.end if self.rows else width
        return self.rows + rows <= capacity_rows and width <= end and end + future <= columns

    def place(
        self, layers: Sequence[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor
    ) -> None:
        """Write joining rows' prefilled keys and values (and mask) after the used rows,
        their last column at ``end - 1`` (``fits`` said they fit)."""
        rows, width = mask.shape
        if not self.rows:
            self._seek(width)
        at, end = slice(self.rows, self.rows + rows), self.end
        for layer, (keys, values) in zip(self.slots, layers, strict=True):
            layer.key_buffer[at, :, end - width : end] = keys
            layer.value_buffer[at, :, end - width : end] = values
        self.mask[at] = False
        self.mask[at, end - width : end] = mask.bool()
        self.rows += rows

    def open_column(self, rows: int) -> None:
        """Mark column ``end`` as used by the step's first ``rows`` rows, padding rows included
        (each then attends to its own new column at least: never an empty softmax)."""
        # ``narrow`` is one op whatever the rows, slicing is not.
        self.mask.narrow(0, 0, rows)[:, self.end] = True

    def advance(self) -> None:
        """After a step: column ``end`` is written."""
        self.end += 1
        self.column.add_(1)

    def keep(self, keep: Sequence[int]) -> list[int]:
        """Keep the rows at ``keep``: each gap below ``len(keep)`` takes a kept row from above.

        Returns the old row of each new row (the batch reorders its own columns by it).
        """
        count, kept = len(keep), set(keep)
        gaps = [i for i in range(count) if i not in kept]
        movers = [i for i in keep if i >= count]
        order = list(range(count))
        if gaps:
            to = torch.tensor(gaps, dtype=torch.long, device=self.mask.device)
            source = torch.tensor(movers, dtype=torch.long, device=self.mask.device)
            for layer in self.slots:
                layer.key_buffer[to] = layer.key_buffer[source]
                layer.value_buffer[to] = layer.value_buffer[source]
            self.mask[to] = self.mask[source]
            for gap, mover in zip(gaps, movers, strict=True):
                order[gap] = mover
        self.rows = count
        return order

    def moved(
        self, rows: int, width: int, future: int, span: int, limits: tuple[int, int]
    ) -> SlotCache:
        """This cache's rows (their last ``span`` columns) moved left, with room for ``rows``
        more of ``width`` columns and ``future`` columns to grow into: in these buffers where
        they hold that and are not over twice too wide, else in new ones."""
        left = max(width, span)
        need = (self.rows + rows, left + future)
        fresh = _capacity(*need, limits)
        capacity_rows, columns = self.capacity
        if need[0] <= capacity_rows and need[1] <= columns <= 2 * fresh[1]:
            target = self
        else:
            shapes = [(layer.key_buffer, layer.value_buffer) for layer in self.slots]
            target = SlotCache(shapes, *fresh)
        used, start = slice(0, self.rows), self.end - span
        for old, layer in zip(self.slots, target.slots, strict=True):
            # Cloned: within one buffer the source and target columns may overlap.
            keys = old.key_buffer[used, :, start : self.end].clone()
            values = old.value_buffer[used, :, start : self.end].clone()
            layer.key_buffer[used, :, left - span : left] = keys
            layer.value_buffer[used, :, left - span : left] = values
        live = self.mask[used, start : self.end].clone()
        target.mask.zero_()
        target.mask[used, left - span : left] = live
        target.rows = self.rows
        target._seek(left)
        return target

    def _seek(self, end: int) -> None:
        self.end = end
        self.column.fill_(end)


def cache_argument(model: Any) -> str:
    """The name the model's forward takes its cache by: ``cache`` since transformers 5.2x,
    ``past_key_values`` before (5.17 on the GPU machine of ``benchmarks.gpu``)."""
    # The class's forward: an instance's may be wrapped (hooks, spies) behind ``**kwargs``.
    parameters = inspect.signature(type(model).forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def empty_cache(
    layers: Sequence[tuple[torch.Tensor, torch.Tensor]],
    rows: int,
    columns: int,
    limits: tuple[int, int],
) -> SlotCache:
    """A cache shaped like the prefill's ``layers`` (keys, values) for ``rows`` x ``columns``."""
    return SlotCache(layers, *_capacity(rows, columns, limits))


def _capacity(rows: int, columns: int, limits: tuple[int, int]) -> tuple[int, int]:
    """Twice the columns asked for and rows up to the next power of two, so that the batch
    decodes and admits a while before the next move; within ``limits`` (the batch's row cap
    and token budget) where the rows asked for fit them. Both are rungs of the bucket ladder."""
    most_rows, budget = limits
    more_rows = row_bucket(max(rows, min(most_rows, 1 << max(rows - 1, 0).bit_length())))
    more_columns = column_bucket(2 * columns)
    if more_rows * more_columns > budget:
        more_columns = max(column_bucket(columns), rung_below(budget // more_rows))
    if more_rows * more_columns > budget:
        more_rows = row_bucket(rows)
    return more_rows, more_columns


def _buffer(like: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
    """Zeros: stale columns are masked, but must never be NaN (0 x NaN is NaN)."""
    heads, dim = like.shape[1], like.shape[3]
    return torch.zeros(rows, heads, columns, dim, dtype=like.dtype, device=like.device)
