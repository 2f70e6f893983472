"""Operators' weights: GGUF files converted once, sharded checkpoints, spreading over devices."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from schemas.registry import ModelSpec
from schemas.settings import Settings
from tests.llama2_fixture import Llama2Fixture, check_golden
from tests.llama2_gguf import write_gguf
from tests.unit.factories import sampling, task, task_message
from worker.backends.transformers import TransformersBackend
from worker.forward import EagerStep, PaddedStep, StepMode
from worker.task import Completion
from worker.weights import checkpoint_dir, cuda_placement, load_weights, weights_state

CPU = torch.device("cpu")
IDS = torch.tensor([[1, 9038, 2501, 263, 931]])


def _spec(path: Path, **options: Any) -> ModelSpec:
    return ModelSpec(name="llama-2-7b", backend="transformers", path=str(path), **options)


def _logits(model: Any) -> torch.Tensor:
    with torch.no_grad():
        logits: torch.Tensor = model(input_ids=IDS).logits
    return logits.float()


@pytest.fixture(scope="module")
def reference(llama2: Llama2Fixture) -> torch.Tensor:
    model, _ = load_weights(_spec(llama2.base), Path("/nonexistent"), CPU, "sdpa")
    return _logits(model)


def test_a_gguf_file_is_converted_once_into_the_cache(
    llama2: Llama2Fixture, reference: torch.Tensor, tmp_path: Path
) -> None:
    gguf = write_gguf(llama2, llama2.base, tmp_path / "llama-2-tiny.gguf")
    spec = _spec(gguf, chat_template=False)
    assert weights_state(spec, tmp_path / "cache").startswith("to convert:")
    converted = checkpoint_dir(spec, tmp_path / "cache")
    assert converted == tmp_path / "cache" / "models" / "llama-2-7b"
    assert weights_state(spec, tmp_path / "cache").startswith("ready:")
    model, tokenizer = load_weights(spec, tmp_path / "cache", CPU, "sdpa")
    assert model.config.architectures == ["LlamaForCausalLM"]
    torch.testing.assert_close(_logits(model), reference, atol=0.05, rtol=0.02)
    check_golden(tokenizer, llama2.golden())  # the GGUF's vocabulary, as Meta tokenises
    marker = converted / "kc-converted.ok"
    before = marker.stat().st_mtime_ns
    checkpoint_dir(spec, tmp_path / "cache")
    assert marker.stat().st_mtime_ns == before  # not converted again
    os.utime(gguf, ns=(before + 10**9, before + 10**9))  # the operator replaced the file
    checkpoint_dir(spec, tmp_path / "cache")
    assert marker.stat().st_mtime_ns != before


def test_a_gguf_file_named_in_a_directory(llama2: Llama2Fixture, tmp_path: Path) -> None:
    write_gguf(llama2, llama2.base, tmp_path / "w.gguf")
    spec = _spec(tmp_path, gguf_file="w.gguf")
    assert spec.unavailable_reason(Settings()) is None
    assert _spec(tmp_path, gguf_file="missing.gguf").unavailable_reason(Settings()) is not None
    assert checkpoint_dir(spec, tmp_path / "cache").name == "llama-2-7b"


def test_a_sharded_checkpoint_loads_whole(
    llama2: Llama2Fixture, reference: torch.Tensor, tmp_path: Path
) -> None:
    model, tokenizer = load_weights(_spec(llama2.base), tmp_path, CPU, "sdpa")
    model.save_pretrained(tmp_path / "sharded", max_shard_size="2MB")
    tokenizer.save_pretrained(tmp_path / "sharded")
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 1
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    sharded, _ = load_weights(_spec(tmp_path / "sharded"), tmp_path, CPU, "sdpa")
    torch.testing.assert_close(_logits(sharded), reference)


async def test_the_device_map_auto_path_loads_and_generates_the_same(llama2: Llama2Fixture) -> None:
    spec = _spec(llama2.base, chat_template=False)
    texts = []
    for device_map in (None, "auto"):
        model, tokenizer = load_weights(spec, Path("/nonexistent"), CPU, "sdpa", device_map)
        assert model.device == CPU  # on CPU, accelerate's placement puts everything there
        backend = TransformersBackend(spec, model, tokenizer, max_batch=2, token_budget=4096)
        job = task(task_message(model=spec.name, sampling=sampling(max_tokens=6, temperature=0)))
        try:
            (outcome,) = [event async for _, event in backend.run([job])]
        finally:
            await backend.aclose()
        assert isinstance(outcome, Completion)
        texts.append(outcome.text)
    assert texts[0] == texts[1]


def test_weights_that_do_not_fit_one_gpu_are_spread() -> None:
    gib = 2**30
    assert cuda_placement(14 * gib, [80 * gib]) is None  # llama-2-7b in bf16 on one H100
    assert cuda_placement(138 * gib, [80 * gib, 80 * gib]) == "auto"  # llama-2-70b
    assert cuda_placement(26 * gib, [24 * gib, 24 * gib]) == "auto"  # 13b on two 24 GB cards
    assert cuda_placement(1, []) == "auto"


@pytest.mark.parametrize("compiled", [False, True])
async def test_kc_torch_compile_reaches_the_decode_step(
    llama2: Llama2Fixture, tmp_path: Path, compiled: bool
) -> None:
    # Only the wiring from the settings to the batch: compiling happens at the first step (the
    # compiled step itself is tested in test_compile.py); graphs fall back off CUDA.
    settings = Settings(device="cpu", cache_dir=tmp_path, torch_compile=compiled, cuda_graphs=True)
    backend = await TransformersBackend.load(_spec(llama2.base), settings)
    try:
        assert backend._batch.mode == StepMode(compiled="inductor" if compiled else None)
        assert isinstance(backend._batch._step, PaddedStep if compiled else EagerStep)
    finally:
        await backend.aclose()
