"""A decode step's forward pass: eager, compiled once per row bucket, or replayed as CUDA graphs.

Eager steps run the live rows as they are. A compiled step (``KC_TORCH_COMPILE``) is traced with
static shapes (``dynamic=False``), so its rows are padded up to a bucket (``worker.buckets``):
rows joining and leaving inside a bucket reuse its graph, and a batch of up to 32 rows compiles
at most ten (times the few cache widths it meets). CUDA graphs (``KC_CUDA_GRAPHS``,
``worker.graphs``) pad the same way. Padding rows are the free rows of the KV cache: their mask
opens their own new column, their outputs are cut off before sampling, so no token of theirs
reaches a row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from worker.buckets import MIN_COLUMNS, row_bucket, row_buckets
from worker.graphs import GraphedStep, capture_for
from worker.kvcache import SlotCache, cache_argument

log = logging.getLogger(__name__)

# ids [rows, 1] and the cache (its mask opened for those rows) -> logits [rows, vocab]
Forward = Callable[[torch.Tensor, SlotCache], torch.Tensor]
# tokens [live rows] and the cache -> logits [live rows, vocab]; the cache's column opened
Step = Callable[[torch.Tensor, SlotCache], torch.Tensor]
# The widest cache a compiled step is expected to meet, in columns.
_WIDEST = 1 << 16


@dataclass(frozen=True, slots=True)
class StepMode:
    """How decode steps run (``KC_TORCH_COMPILE``, ``KC_CUDA_GRAPHS``)."""

    compiled: str | None = None  # torch.compile's backend; None: eager
    graphs: bool = False  # a graph per row bucket (off CUDA a stand-in replays eagerly: tests)
    overlap: bool = False  # each step's tokens read a step later (``worker.readback``)

    @property
    def padded(self) -> bool:
        """Whether steps run at bucketed shapes."""
        return self.compiled is not None or self.graphs


def step_mode(torch_compile: bool, cuda_graphs: bool, device: torch.device) -> StepMode:
    """The mode the settings ask for on ``device``: graphs and the late readback need CUDA."""
    compiled = "inductor" if torch_compile else None
    if cuda_graphs and device.type != "cuda":
        log.warning("KC_CUDA_GRAPHS needs a CUDA device: decoding on %s without graphs", device)
        return StepMode(compiled)
    return StepMode(compiled, graphs=cuda_graphs, overlap=cuda_graphs)


def forward_of(model: Any) -> Forward:
    """The model's next-token logits for one new column of every row of the cache."""
    keyword = cache_argument(model)

    def forward(ids: torch.Tensor, cache: SlotCache) -> torch.Tensor:
        mask = cache.mask.narrow(0, 0, ids.shape[0])
        # The new token's position is the count of the row's columns before it.
        positions = mask.sum(dim=1, keepdim=True) - 1
        out = model(
            input_ids=ids,
            # Given as the 4D mask SDPA takes (True: attend), so that transformers does not
            # build one, nor ask the device whether the 2D mask has any padding (a sync).
            attention_mask=mask[:, None, None, :],
            position_ids=positions,
            use_cache=True,
            **{keyword: cache},
        )
        logits: torch.Tensor = out.logits[:, -1, :]
        return logits

    return forward


def compiled(forward: Forward, backend: str, max_rows: int) -> Forward:
    """``forward`` compiled by ``backend`` with static shapes: once per row bucket and width."""
    widths = [w for w in row_buckets(_WIDEST) if w >= MIN_COLUMNS]  # the column buckets
    shapes = len(row_buckets(max_rows)) * len(widths)
    # Dynamo stops recompiling a function after ``recompile_limit`` shapes (8) and runs it
    # eagerly from then on; the buckets bound the shapes, so the limit is raised to them.
    config: Any = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, shapes)
    config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, shapes)
    step: Forward = torch.compile(forward, backend=backend, dynamic=False)
    return step


class EagerStep:
    """The live rows as they are: no padding (eager ops gain nothing from fixed shapes)."""

    def __init__(self, forward: Forward) -> None:
        self.forward = forward

    def __call__(self, tokens: torch.Tensor, cache: SlotCache) -> torch.Tensor:
        """Logits of every live row's next token."""
        cache.open_column(tokens.shape[0])
        return self.forward(tokens.unsqueeze(1), cache)


class PaddedStep:
    """The live rows padded up to their bucket: a compiled step sees few shapes."""

    def __init__(self, forward: Forward) -> None:
        self.forward = forward

    def __call__(self, tokens: torch.Tensor, cache: SlotCache) -> torch.Tensor:
        """Logits of every live row's next token (the padding rows' cut off)."""
        live = tokens.shape[0]
        rows = row_bucket(live)
        cache.open_column(rows)
        ids = torch.nn.functional.pad(tokens, (0, rows - live)).unsqueeze(1)
        return self.forward(ids, cache).narrow(0, 0, live)


def step_of(model: Any, mode: StepMode, max_rows: int) -> Step:
    """The step ``mode`` asks for."""
    forward = forward_of(model)
    if mode.compiled:
        forward = compiled(forward, mode.compiled, max_rows)
    if mode.graphs:
        return GraphedStep(forward, capture_for(next(model.parameters()).device))
    return PaddedStep(forward) if mode.padded else EagerStep(forward)
