"""B1: the local model at concurrency 1, 8 and 32: naive ``generate``, ``transformers serve
--continuous-batching`` over HTTP, and ours through the front end and Kafka, each against the
ceiling: the model's forward passes alone on the same prompts at the same batch sizes
(``benchmarks.ceiling``).

Every system gets the same chat prompts, up to 32 new tokens and the same parameters in each
row: ``plain`` (temperature 0.7, top_p 1) and ``nucleus`` (temperature 0.7, top_p 0.9); ours
alone also runs the API spec example's full set (``spec``: top_p 0.8, presence 0.5, frequency
-0.5, stop ".") against ours plain. Every system gets a warm-up request first. They run one
after the other (never together: they share the cores), in one process run, so their ratios
compare like with like on a noisy shared machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from devstack import process

from benchmarks.ceiling import Ceiling
from benchmarks.http import Pool
from benchmarks.load import closed_loop
from benchmarks.stack import HEADERS, service
from benchmarks.stats import Run
from schemas.registry import load_registry
from worker.weights import checkpoint_dir

MODEL = "smollm2-135m-instruct"
SERVE = "transformers serve --cb"
NAIVE = "naive generate"
OURS = "ours (HTTP+Kafka)"
NEW_TOKENS = 32
# The parameter sets of B1's rows (``spec`` is the API spec example's, run by ours alone).
PARAMS: dict[str, dict[str, Any]] = {
    "plain": {"temperature": 0.7, "top_p": 1.0},
    "nucleus": {"temperature": 0.7, "top_p": 0.9},
    "spec": {
        "temperature": 0.7,
        "top_p": 0.8,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "stop": ["."],
    },
}
_ANIMALS = ("cat", "dog", "heron", "octopus", "fox", "whale", "owl", "ant")


def prompt(i: int) -> str:
    """The i-th benchmark prompt (a handful of distinct ones, like real traffic)."""
    return f"Write a short story about a {_ANIMALS[i % len(_ANIMALS)]} called number {i}."


def model_dir() -> Path:
    """The converted checkpoint both our worker and ``transformers serve`` load."""
    return checkpoint_dir(load_registry().get(MODEL), Path.home() / ".cache/kafka-completions")


def _load() -> tuple[Any, Any]:
    """Our checkpoint as the worker loads it on CPU (bf16, SDPA), and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = model_dir()
    model: Any = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.bfloat16, attn_implementation="sdpa"
    )
    return model.eval(), AutoTokenizer.from_pretrained(path)


def chat_ids(tokenizer: Any, i: int) -> list[int]:
    """The i-th prompt through the chat template, as token ids."""
    chat = [{"role": "user", "content": prompt(i)}]
    ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)
    return list(ids["input_ids"])


def ceilings(requests: int, levels: list[int]) -> list[Run]:
    """The forward passes alone on each level's prompts, NEW_TOKENS each (one warm-up wave)."""
    model, tokenizer = _load()
    prompts = [chat_ids(tokenizer, i) for i in range(requests)]
    runs = []
    for c in levels:
        ceiling = Ceiling(model, c)
        ceiling.run(prompts[:c], NEW_TOKENS)  # warm-up
        runs.append(ceiling.run(prompts, NEW_TOKENS))
    return runs


def naive(requests: int, params: str) -> Run:
    """One prompt at a time with ``model.generate``, as a user would write it."""
    import torch

    model, tokenizer = _load()
    run = Run("B1", NAIVE, f"c=1 {params}")
    top = PARAMS[params]

    def one(i: int) -> int:
        chat = [{"role": "user", "content": prompt(i)}]
        ids: Any = tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
        with torch.inference_mode():
            out = model.generate(
                ids,
                max_new_tokens=NEW_TOKENS,
                do_sample=True,
                temperature=top["temperature"],
                top_p=top["top_p"],
            )
        return int(out.shape[1] - ids.shape[1])

    one(0)  # warm-up, as the other systems get
    began = time.perf_counter()
    for i in range(requests):
        started = time.perf_counter()
        tokens = one(i)
        run.ok(time.perf_counter() - started, tokens)
    run.elapsed_s = time.perf_counter() - began
    return run


@contextlib.asynccontextmanager
async def hf_serve() -> AsyncIterator[int]:
    """``transformers serve --continuous-batching`` on our checkpoint, on a free port."""
    port = process.free_port()
    cmd = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(model_dir())]
    cmd += ["--continuous-batching", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--dtype", "bfloat16", "--log-level", "warning"]
    # Its paged KV cache is sized from free memory by default (9 GB RSS seen on CPU); give it
    # 16,384 token slots, ample for 32 rows of ~70 tokens.
    cmd += ["--cb-block-size", "32", "--cb-num-blocks", "512"]
    proc = process.launch(cmd, stdout=subprocess.DEVNULL)
    try:
        async with httpx.AsyncClient() as client:

            async def healthy() -> bool:
                with contextlib.suppress(httpx.HTTPError):
                    return (await client.get(f"http://127.0.0.1:{port}/health")).status_code == 200
                return False

            await process.await_ready(healthy, [proc], "transformers serve", 180)
        yield port
    finally:
        process.stop(proc)


async def closed_cell(
    system: str, port: int, send_body: Any, requests: int, conc: int, params: str
) -> Run:
    """One closed-loop cell against an HTTP server, after one warm-up request."""
    pool = Pool("127.0.0.1", port, conc)
    path, headers, body_of, tokens_of = send_body

    async def send(i: int) -> int | None:
        status, raw = await pool.post(path, body_of(i), headers)
        return tokens_of(json.loads(raw)) if status == 200 else None

    try:
        await send(0)  # warm-up: the first request pays lazy loading and compilation
        return await closed_loop(Run("B1", system, f"c={conc} {params}"), send, requests, conc)
    finally:
        await pool.close()


def _hf_request(path: str, params: str) -> Any:
    def body(i: int) -> dict[str, Any]:
        return {
            "model": path,
            "messages": [{"role": "user", "content": prompt(i)}],
            "max_tokens": NEW_TOKENS,
            **PARAMS[params],
        }

    return "/v1/chat/completions", {}, body, lambda r: int(r["usage"]["completion_tokens"])


def our_request(params: str) -> Any:
    """Our ``/v1/completion`` request for ``params``: path, headers, body, tokens read."""

    def body(i: int) -> dict[str, Any]:
        return {"model": MODEL, "prompt": prompt(i), "max_tokens": NEW_TOKENS, **PARAMS[params]}

    return "/v1/completion", HEADERS, body, lambda r: int(r["usage"]["completion_tokens"])


async def b1(bootstrap: str, requests: int, naive_requests: int, levels: list[int]) -> list[Run]:
    """Every B1 cell, one system at a time; plain and nucleus side by side at each level."""
    rows = [(c, p) for c in levels for p in ("plain", "nucleus")]
    runs = await asyncio.to_thread(ceilings, requests, levels)
    runs += [await asyncio.to_thread(naive, naive_requests, p) for p in ("plain", "nucleus")]
    async with hf_serve() as port:
        path = str(model_dir())
        for c, p in rows:
            runs.append(await closed_cell(SERVE, port, _hf_request(path, p), requests, c, p))
    env = {"KC_WORKER_MAX_BATCH": str(max(levels))}
    async with service(bootstrap, [MODEL], env) as stack:
        for c, p in [*rows, (max(levels), "spec"), (max(levels), "plain")]:
            runs.append(await closed_cell(OURS, stack.port, our_request(p), requests, c, p))
    return runs
