"""``python -m benchmarks.gpu``: the local engine against transformers on one GPU, in-process.

Needs torch and transformers only, and this repository's ``worker`` and ``benchmarks`` folders:
no Kafka, no pydantic, nothing downloaded. The models are random weights of two shapes built
from configs here, SmolLM2-135M's and Llama-2-7B's (``--llama-layers`` for fewer layers). For
each model and each concurrency (``--concurrency``, 32, 128 and 256 sequences: the same random
prompts of about ``--prompt-tokens`` tokens, ``--new-tokens`` each, greedy, no EOS), one system
at a time:

- ``forward alone``: the forward passes only (``benchmarks.ceiling``; CUDA graphs on CUDA);
- ``ours graphs``: the decode loop with ``KC_CUDA_GRAPHS`` (a graph per row bucket, the late
  readback);
- ``ours eager``: the decode loop as it runs by default;
- ``generate_batch``: transformers' continuous batching, its CUDA graphs on (on CUDA);
- ``naive generate``: ``model.generate`` on every sequence at once, left-padded.

Each runs once untimed (allocations, captures, warm-ups), then once timed. tok/s is sequences x
new tokens over the timed wall time, prefill included; ms a step is that time over the new
tokens. ``agree`` is the share of sequences whose tokens equal naive ``generate``'s: 1 in
float32 on CPU; on a GPU in bf16 batch shapes round differently, so less is expected. Prints a
table and writes JSON to ``--out``. ``--smoke``: a tiny model on CPU in seconds, the graphed
systems skipped (CUDA only). ``--budget-s``: cells that would start later are skipped (the
most telling run first).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoModelForCausalLM, GenerationConfig, LlamaConfig
from transformers.generation.configuration_utils import ContinuousBatchingConfig

from benchmarks.ceiling import Ceiling, synchronize
from worker.decode import DecodeBatch, Row
from worker.forward import StepMode

_COMMON = {"rms_norm_eps": 1e-5, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
SHAPES: dict[str, dict[str, Any]] = {
    "smollm2-135m": {
        "vocab_size": 49_152, "hidden_size": 576, "intermediate_size": 1536,
        "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
        "max_position_embeddings": 8192, "tie_word_embeddings": True,
    },
    "llama-2-7b": {
        "vocab_size": 32_000, "hidden_size": 4096, "intermediate_size": 11_008,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
        "max_position_embeddings": 4096,
    },
    "tiny": {
        "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
    },
}  # fmt: skip
# The order they run in: the most telling first, should --budget-s cut the run short.
SYSTEMS = ("ours graphs", "generate_batch", "ours eager", "forward alone", "naive generate")
Tokens = list[list[int]]


@dataclass(frozen=True, slots=True)
class Greedy:
    """A row's parameters (``worker.sampling.SamplingParams``) without pydantic: greedy."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


def build(shape: str, layers: int | None, device: torch.device, dtype: torch.dtype) -> Any:
    """A random-weight Llama of ``shape`` on ``device``, never generating EOS."""
    fields = SHAPES[shape] | _COMMON | ({"num_hidden_layers": layers} if layers else {})
    torch.manual_seed(0)
    with torch.device(device):
        model: Any = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
            LlamaConfig(**fields), dtype=dtype, attn_implementation="sdpa"
        )
    model.generation_config.eos_token_id = None  # every sequence runs its new tokens
    model.generation_config.pad_token_id = 0
    return model.to(device).eval()  # already there, unless from_config ignored the device


def prompts(count: int, mean: int, vocab: int) -> Tokens:
    """``count`` random prompts of ``mean / 2`` to ``3 * mean / 2`` tokens."""
    draw = random.Random(0)
    lengths = [draw.randint(max(1, mean // 2), mean + mean // 2) for _ in range(count)]
    return [[draw.randrange(3, vocab) for _ in range(n)] for n in lengths]


def ours(model: Any, mode: StepMode, most: int, longest: int) -> Callable[[Tokens, int], Tokens]:
    """The decode loop: every sequence admitted at once, stepped until all are done. One batch
    for every run, so a graph captured in the untimed run is replayed in the timed one."""
    batch = DecodeBatch(
        model, eos=[], pad=0, decode=lambda t: "", max_rows=most, token_budget=most * longest,
        mode=mode,
    )  # fmt: skip

    def run(work: Tokens, new_tokens: int) -> Tokens:
        rows = [Row(i, p, Greedy(new_tokens), seed=i) for i, p in enumerate(work)]
        batch.admit(rows)
        while batch.rows:
            batch.step()
        return [r.tokens for r in rows]

    return run


def naive(model: Any, work: Tokens, new_tokens: int) -> Tokens:
    """``generate`` on every sequence at once, left-padded."""
    width = max(len(p) for p in work)
    device = next(model.parameters()).device
    ids = torch.tensor([[0] * (width - len(p)) + p for p in work], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in work], device=device)
    with torch.inference_mode():
        out = model.generate(
            ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False, pad_token_id=0
        )
    tokens: Tokens = out[:, width:].tolist()
    return tokens


def generate_batch(model: Any, work: Tokens, new_tokens: int) -> Tokens:
    """transformers' continuous batching, its manager kept between the untimed and timed run."""
    cuda = next(model.parameters()).device.type == "cuda"
    # Its cache is sized from free GPU memory (half: the other systems need the rest after);
    # on CPU it is given a size.
    wanted: dict[str, Any] = {"use_cuda_graph": cuda, "max_memory_percent": 0.5}
    if not cuda:
        wanted = {"use_cuda_graph": False, "num_blocks": 64, "page_size": 32, "block_size": 32}
        wanted["max_batch_tokens"] = 512
    known = {f.name for f in dataclasses.fields(ContinuousBatchingConfig)}
    # page_size replaced block_size after 5.17: each version takes the one it knows.
    if "page_size" in known:
        wanted.pop("block_size", None)
    config = ContinuousBatchingConfig(**{k: v for k, v in wanted.items() if k in known})
    generation = GenerationConfig(  # type: ignore[no-untyped-call]
        max_new_tokens=new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0
    )
    out = model.generate_batch(
        work, generation_config=generation, continuous_batching_config=config,
        persistent_manager=True, progress_bar=False,
    )  # fmt: skip
    by_prompt = {tuple(o.prompt_ids): list(o.generated_tokens) for o in out.values()}
    return [by_prompt[tuple(p)] for p in work]


def timed(work: Callable[[], Tokens], device: torch.device) -> tuple[float, Tokens]:
    """Seconds of one run of ``work`` after an untimed one, and its tokens."""
    work()
    synchronize(device)
    began = time.perf_counter()
    tokens = work()
    synchronize(device)
    return time.perf_counter() - began, tokens


def runner(name: str, model: Any, work: Tokens, new_tokens: int) -> Callable[[], Tokens]:
    """System ``name`` on ``work``, its state (caches, graphs) made now and freed with it."""
    cuda = next(model.parameters()).device.type == "cuda"
    graphs = StepMode(graphs=True, overlap=True)
    longest = max(len(p) for p in work) + new_tokens
    if name == "forward alone":
        ceiling = Ceiling(model, len(work), graphs if cuda else StepMode())
        return lambda: [[] for _ in ceiling.run(work, new_tokens).latencies_s]
    if name in ("ours graphs", "ours eager"):
        loop = ours(model, graphs if name == "ours graphs" else StepMode(), len(work), longest)
        return lambda: loop(work, new_tokens)
    if name == "generate_batch":
        return lambda: generate_batch(model, work, new_tokens)
    return lambda: naive(model, work, new_tokens)


def cells(
    model: Any, shape: str, work: Tokens, new_tokens: int, deadline: float
) -> list[dict[str, Any]]:
    """Every system's cell at one concurrency, the most telling first."""
    device = next(model.parameters()).device
    rows: list[dict[str, Any]] = []
    tokens: dict[str, Tokens] = {}
    for name in SYSTEMS:
        cell: dict[str, Any] = {"model": shape, "sequences": len(work), "system": name}
        rows.append(cell)
        if name == "ours graphs" and device.type != "cuda":
            cell["skipped"] = f"CUDA graphs need CUDA, and this run is on {device.type}"
        elif time.perf_counter() > deadline:
            cell["skipped"] = "past --budget-s"
        else:
            cell |= _measured(name, model, work, new_tokens, tokens)
        if name == "generate_batch":
            model.destroy_cached_continuous_batching_manager()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for cell in rows:
        cell["agree"] = _agree(tokens.get(cell["system"]), tokens.get("naive generate"))
    return rows


def _measured(
    name: str, model: Any, work: Tokens, new_tokens: int, tokens: dict[str, Tokens]
) -> dict[str, Any]:
    """A system's figures (its tokens kept in ``tokens``), or the error that stopped it."""
    device = next(model.parameters()).device
    try:
        seconds, tokens[name] = timed(runner(name, model, work, new_tokens), device)
    except Exception as exc:  # one system failing (out of memory, a capture) stops no other
        logging.getLogger(__name__).exception("%s failed", name)
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}
    total = len(work) * new_tokens
    return {
        "seconds": round(seconds, 3),
        "tok_s": round(total / seconds, 1),
        "ms_step": round(1000 * seconds / new_tokens, 2),
    }


def _agree(tokens: Tokens | None, reference: Tokens | None) -> float | None:
    """The share of sequences decoding naive ``generate``'s tokens."""
    if not tokens or not reference or not any(tokens):
        return None
    return round(sum(a == b for a, b in zip(tokens, reference, strict=True)) / len(tokens), 3)


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model and concurrency: ours with graphs against the others, and ours eager."""
    rate = {(r["model"], r["sequences"], r["system"]): r.get("tok_s") for r in rows}
    out = []
    for model, sequences in dict.fromkeys((r["model"], r["sequences"]) for r in rows):

        def of(a: str, b: str, m: str = model, n: int = sequences) -> float | None:
            x, y = rate[(m, n, a)], rate[(m, n, b)]
            return round(x / y, 2) if x and y else None

        out.append(
            {
                "model": model,
                "sequences": sequences,
                "graphs_vs_generate_batch": of("ours graphs", "generate_batch"),
                "graphs_vs_eager": of("ours graphs", "ours eager"),
                "graphs_of_forward_alone": of("ours graphs", "forward alone"),
                "eager_vs_generate_batch": of("ours eager", "generate_batch"),
                "eager_vs_naive": of("ours eager", "naive generate"),
                "eager_of_forward_alone": of("ours eager", "forward alone"),
            }
        )
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a tiny model on CPU, seconds")
    parser.add_argument("--models", default="smollm2-135m,llama-2-7b")
    parser.add_argument("--llama-layers", type=int, default=32, help="of the Llama-2-7B shape")
    parser.add_argument("--concurrency", default="32,128,256")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=64, help="a prompt's mean")
    parser.add_argument("--budget-s", type=float, default=400.0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu.json"))
    return parser


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every cell of every model the arguments name."""
    cuda = torch.cuda.is_available() and not args.smoke
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.float32 if args.smoke else torch.bfloat16
    deadline = time.perf_counter() + args.budget_s
    rows: list[dict[str, Any]] = []
    for shape in args.models.split(","):
        layers = args.llama_layers if shape == "llama-2-7b" else None
        model = build(shape, layers, device, dtype)
        for sequences in (int(c) for c in args.concurrency.split(",")):
            work = prompts(sequences, args.prompt_tokens, SHAPES[shape]["vocab_size"])
            rows += cells(model, shape, work, args.new_tokens, deadline)
        del model
        if cuda:
            torch.cuda.empty_cache()
    return rows


def meta(args: argparse.Namespace) -> dict[str, Any]:
    """What ran where: a figure means nothing without it."""
    cuda = torch.cuda.is_available() and not args.smoke
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": torch.cuda.get_device_name() if cuda else f"cpu ({platform.processor()})",
        "gpu_figures": cuda,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "args": {k: str(v) for k, v in vars(args).items()},
    }


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure, print the table, write the JSON."""
    args = _parser().parse_args(argv)
    if args.smoke:
        args.models, args.concurrency, args.new_tokens, args.prompt_tokens = "tiny", "2,5", 6, 6
    transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    logging.getLogger("ContinuousBatchingLogger").setLevel(logging.ERROR)
    report: dict[str, Any] = {"meta": meta(args), "cells": measure(args)}
    report["ratios"] = ratios(report["cells"])
    if not report["meta"]["gpu_figures"]:
        out("no CUDA device: every figure below is a CPU figure, none a GPU one")
    out("model | sequences | system | tok/s | ms a step | agree | note")
    for c in report["cells"]:
        figures = [c.get("tok_s", "-"), c.get("ms_step", "-"), c.get("agree", "-")]
        out(" | ".join(str(x) for x in [c["model"], c["sequences"], c["system"], *figures])
            + "".join(f" | {c[k]}" for k in ("skipped", "error") if k in c))  # fmt: skip
    for r in report["ratios"]:
        out(str(r))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    out(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
