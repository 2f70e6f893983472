"""Ops a decode step dispatches (kernel launches, on a GPU): ``python -m benchmarks.launches``.

A 30-layer Llama of random narrow weights with SmolLM2's vocabulary (49,152) decodes 32 rows;
one step is counted under the dispatch mode of ``tests/unit/worker/test_step_syncs.py``, with
plain sampling and with the API spec example's parameters. Views (reshape, transpose, slice...)
are counted apart: they launch nothing. The figures feed the GPU estimate of docs/benchmarks.md.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tests.unit.factories import sampling
from tests.unit.worker.test_step_syncs import _Ops
from worker.decode import DecodeBatch, Row

_LAYERS = 30
_VIEWS = {
    "view", "reshape", "transpose", "slice", "expand", "unsqueeze", "squeeze", "t", "as_strided",
    "select", "permute", "detach", "alias", "_unsafe_view", "narrow", "split", "unbind", "chunk",
    "contiguous", "to", "_reshape_alias", "expand_as", "view_as",
}  # fmt: skip
_PARAMS: dict[str, dict[str, Any]] = {
    "plain": {"temperature": 0.7, "top_p": 1.0},
    "spec": {"temperature": 0.7, "top_p": 0.8, "presence_penalty": 0.5, "frequency_penalty": -0.5},
}


def main() -> None:
    """Print each parameter set's ops per step."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=49_152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
    )
    model: Any = LlamaForCausalLM(config)
    model.eval()
    for name, params in _PARAMS.items():
        batch = DecodeBatch(model, eos=[], pad=0, decode=str, max_rows=32, token_budget=65_536)
        stop = ("\x00never",)  # a stop string that never matches: the check still runs
        batch.admit(
            [
                Row(i, [3 + i, 4, 5, 6], sampling(max_tokens=40, stop=stop, **params))
                for i in range(32)
            ]
        )
        batch.step()
        with _Ops() as ops:
            batch.step()
        launches = sum(n for op, n in ops.ops.items() if op not in _VIEWS)
        print(
            f"{name}: {sum(ops.ops.values())} ops a step, {launches} launching a kernel "
            f"({ops.ops['linear']} linear, {ops.ops['scaled_dot_product_attention']} attention)"
        )


if __name__ == "__main__":
    main()
