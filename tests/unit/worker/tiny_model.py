"""A tiny random Llama for the decode-loop tests: fast, and deterministic in float32."""

from __future__ import annotations

from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def tiny_llama(vocab_size: int, max_positions: int, seed: int, device: str = "cpu") -> Any:
    """Two random layers of width 32, no download, in eval mode (on ``meta``: shapes only)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
    )
    with torch.device(device):
        tiny: Any = LlamaForCausalLM(config)
    return tiny.eval()
