"""A GGUF file of a tiny Llama-2 checkpoint, written as llama.cpp's converter lays it out.

Operators often hold Llama-2 weights as GGUF; the worker converts such a file once into a
checkpoint. This writes one from a test checkpoint (F32 tensors, the real vocabulary's
``tokenizer.ggml.*`` fields copied from the archive's GGUF) so the conversion can be checked
against the checkpoint it came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.llama2_fixture import VOCAB, Llama2Fixture

_LAYER_TENSORS = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def write_gguf(fixture: Llama2Fixture, checkpoint: Path, target: Path) -> Path:
    """Write ``checkpoint`` (a fixture's) as a GGUF file at ``target``."""
    import gguf
    import torch
    from transformers import LlamaForCausalLM

    model: Any = LlamaForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    config = model.config
    writer = gguf.GGUFWriter(target, "llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    _copy_vocabulary(fixture.vocab_dir / VOCAB, writer)
    for name, tensor in _tensors(model.state_dict(), config.num_attention_heads):
        writer.add_tensor(name, tensor.numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


def _copy_vocabulary(vocab: Path, writer: Any) -> None:
    import gguf

    fields = gguf.GGUFReader(vocab).fields
    value = {k: f.contents() for k, f in fields.items() if k.startswith("tokenizer.")}
    writer.add_tokenizer_model(value["tokenizer.ggml.model"])
    writer.add_token_list(value["tokenizer.ggml.tokens"])
    writer.add_token_scores(value["tokenizer.ggml.scores"])
    writer.add_token_types(value["tokenizer.ggml.token_type"])
    writer.add_bos_token_id(value["tokenizer.ggml.bos_token_id"])
    writer.add_eos_token_id(value["tokenizer.ggml.eos_token_id"])
    writer.add_unk_token_id(value["tokenizer.ggml.unknown_token_id"])
    writer.add_add_bos_token(value["tokenizer.ggml.add_bos_token"])
    writer.add_add_eos_token(value["tokenizer.ggml.add_eos_token"])


def _tensors(state: dict[str, Any], heads: int) -> list[tuple[str, Any]]:
    out = [
        ("token_embd.weight", state["model.embed_tokens.weight"]),
        ("output_norm.weight", state["model.norm.weight"]),
        ("output.weight", state["lm_head.weight"]),
    ]
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("model.layers."))
    for i in range(layers):
        for hf, ours in _LAYER_TENSORS.items():
            tensor = state[f"model.layers.{i}.{hf}.weight"]
            if ours in ("attn_q", "attn_k"):
                tensor = _permute(tensor, heads)
            out.append((f"blk.{i}.{ours}.weight", tensor))
    return out


def _permute(weights: Any, heads: int) -> Any:
    """llama.cpp's rotary layout of q and k (transformers' GGUF reader undoes it)."""
    rows = weights.shape[0]
    return (
        weights.reshape(heads, 2, rows // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )
