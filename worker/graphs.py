"""CUDA graphs of the decode step: captured once per row bucket, replayed with one launch a step.

An eager decode step of a 30-layer model dispatches ~1,250 kernels, each costing the host a few
microseconds, so on a GPU the host, not the device, bounds a small model's step. A CUDA graph
records the step's kernels once and replays them all with one launch. A graph replays on the
very memory it was captured on, so the step's inputs live in static buffers (the ids, one
buffer per bucket; the KV cache's buffers and mask, which stay put until the cache grows:
``worker.kvcache``) and its logits come out in the graph's own output. Whatever changes between
steps outside those buffers (the cache's column, the mask's new column) is written before the
replay, not inside it. A new cache (it grew) drops the graphs; they are captured again as its
buckets come up.

Off CUDA, ``eager_capture`` stands in for the capture and replays by calling the step again on
the same static buffers, so the suite checks on CPU that the buffers carry every input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from worker.buckets import row_bucket
from worker.kvcache import SlotCache

Replay = Callable[[], torch.Tensor]
Capture = Callable[[Callable[[], torch.Tensor]], Replay]


def eager_capture(step: Callable[[], torch.Tensor]) -> Replay:
    """A stand-in for a capture: the step runs once (as a capture's warm-up would), and every
    replay runs it again."""
    step()
    return step


def cuda_capture(pool: Any) -> Capture:  # CUDA only: the suite cannot run it
    """Captures into CUDA graphs sharing the memory ``pool``."""

    def capture(step: Callable[[], torch.Tensor]) -> Replay:
        # Warm-up on a side stream, as PyTorch asks: lazy initialisations (cuBLAS workspaces,
        # autotuning) must happen before the capture, not in it. The step's writes (the cache
        # column) are the same ones the replay makes, so running it more than once is harmless.
        side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            out = step()

        def replay() -> torch.Tensor:
            graph.replay()
            return out

        return replay

    return capture


def capture_for(device: torch.device) -> Capture:
    """CUDA graphs on CUDA, the eager stand-in elsewhere."""
    if device.type == "cuda":  # CUDA only: the suite cannot run it
        return cuda_capture(torch.cuda.graph_pool_handle())
    return eager_capture


@dataclass(frozen=True, slots=True)
class _Graph:
    ids: torch.Tensor  # [bucket, 1]: the static input the graph reads
    replay: Replay


class GraphedStep:
    """The decode step as one graph per row bucket, for the cache it was captured on."""

    def __init__(
        self, forward: Callable[[torch.Tensor, SlotCache], torch.Tensor], capture: Capture
    ):
        self._forward = forward
        self._capture = capture
        self._graphs: dict[int, _Graph] = {}
        self._cache: SlotCache | None = None
        self.captures = 0  # graphs captured so far (a new cache captures again)

    def __call__(self, tokens: torch.Tensor, cache: SlotCache) -> torch.Tensor:
        """Logits of every live row's next token (the padding rows' cut off)."""
        if cache is not self._cache:
            self._graphs.clear()  # captured on buffers that are gone
            self._cache = cache
        live = tokens.shape[0]
        rows = row_bucket(live)
        cache.open_column(rows)
        graph = self._graphs.get(rows)
        if graph is None:
            graph = self._graphs[rows] = self._captured(tokens, rows, cache)
        else:
            graph.ids.narrow(0, 0, live).copy_(tokens.unsqueeze(1))
        return graph.replay().narrow(0, 0, live)

    def _captured(self, tokens: torch.Tensor, rows: int, cache: SlotCache) -> _Graph:
        ids = torch.zeros(rows, 1, dtype=tokens.dtype, device=tokens.device)
        ids.narrow(0, 0, tokens.shape[0]).copy_(tokens.unsqueeze(1))  # before: the capture runs
        self.captures += 1
        return _Graph(ids, self._capture(lambda: self._forward(ids, cache)))
