"""``python -m benchmarks.compile``: what ``KC_TORCH_COMPILE`` costs and gains, to set its default.

For eager steps and compiled ones (``--backend``, inductor by default), on SmolLM2-135M in bf16
on CPU (``--smoke``: a tiny random Llama and ``aot_eager``, seconds):

- each row bucket's first step at the batch's buffers, less a steady step: its compile time;
  their sum is what a worker pays once, at start-up if it warms every bucket, else spread over
  its first requests;
- a worker's start-up: loading the weights, and its first request (one row, fresh compiler);
- tokens/s of a steady batch (``--rows`` rows, ``--steps`` tokens each) and of a churning one
  (rows of 1/4 to all of ``--steps`` tokens, refilled as the backend admits: ``should_admit``),
  each run once untimed first so that its shapes are compiled.

Prints a table and writes JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from schemas.wire import Sampling
from worker.backends.transformers import should_admit
from worker.buckets import row_buckets
from worker.decode import DecodeBatch, Row
from worker.forward import StepMode

_NUCLEUS = Sampling(max_tokens=1, temperature=0.7, top_p=0.9)


def _model(smoke: bool) -> tuple[Any, list[list[int]], float]:
    """The model, 256 prompts and the seconds it took to load."""
    began = time.perf_counter()
    if smoke:
        from tests.unit.worker.tiny_model import tiny_llama

        prompts = [[3 + (i * 7 + j) % 40 for j in range(4 + i % 5)] for i in range(256)]
        return tiny_llama(48, 512, seed=1), prompts, time.perf_counter() - began
    from benchmarks.local import _load, chat_ids

    model, tokenizer = _load()
    prompts = [chat_ids(tokenizer, i) for i in range(256)]
    return model, prompts, time.perf_counter() - began


def _batch(model: Any, rows: int, mode: StepMode) -> DecodeBatch:
    return DecodeBatch(
        model, eos=[], pad=0, decode=lambda t: "", max_rows=rows, token_budget=1 << 20, mode=mode
    )


def _row(i: int, prompt: list[int], tokens: int) -> Row:
    return Row(i, prompt, _NUCLEUS.model_copy(update={"max_tokens": tokens}), seed=i)


def _timed(work: Callable[[], Any]) -> float:
    began = time.perf_counter()
    work()
    return time.perf_counter() - began


def bucket_compiles(
    model: Any, prompts: list[list[int]], rows: int, mode: StepMode
) -> dict[int, float]:
    """Each row bucket's first step less a steady one, largest bucket first, on one batch."""
    buckets = row_buckets(rows)[::-1]
    batch = _batch(model, rows, mode)
    batch.admit([_row(i, prompts[i], 4 * len(buckets) + 4) for i in range(rows)])
    compiles = {}
    for bucket in buckets:
        _keep_below(batch, bucket)
        first = _timed(batch.step)
        steady = min(_timed(batch.step) for _ in range(3))
        compiles[bucket] = round(first - steady, 3)
    return compiles


def _keep_below(batch: DecodeBatch, rows: int) -> None:
    batch.remove(lambda r: bool(r.handle >= rows))


def steady(model: Any, prompts: list[list[int]], rows: int, steps: int, mode: StepMode) -> float:
    """Tokens/s of ``rows`` rows of ``steps`` tokens admitted together (second of two runs)."""
    for _ in range(2):
        batch = _batch(model, rows, mode)
        began = time.perf_counter()
        batch.admit([_row(i, prompts[i], steps) for i in range(rows)])
        while batch.rows:
            batch.step()
        seconds = time.perf_counter() - began
    return round(rows * steps / seconds, 1)


def churning(model: Any, prompts: list[list[int]], rows: int, steps: int, mode: StepMode) -> float:
    """Tokens/s over ``4 * steps`` steps of rows coming and going (second of two runs)."""
    for _ in range(2):
        lengths = random.Random(0)
        batch, waited = _batch(model, rows, mode), 0
        admitted: list[Row] = []
        began = time.perf_counter()
        for _ in range(4 * steps):
            waiting = rows - len(batch.rows)
            if should_admit(waiting, len(batch.rows), waited):
                new = len(admitted)
                joining = [
                    _row(i, prompts[i % len(prompts)], lengths.randint(steps // 4, steps))
                    for i in range(new, new + waiting)
                ]
                admitted += joining
                batch.admit(joining)
                waited = 0
            batch.step()
            waited += 1
        seconds = time.perf_counter() - began
    return round(sum(len(r.tokens) for r in admitted) / seconds, 1)


def first_request(model: Any, prompt: list[int], mode: StepMode) -> float:
    """Seconds for one row of 8 tokens with nothing compiled yet."""
    torch._dynamo.reset()
    batch = _batch(model, 1, mode)
    batch.admit([_row(0, prompt, 8)])
    return round(_timed(lambda: [batch.step() for _ in range(7)]), 3)


def measure(smoke: bool, rows: int, steps: int, backend: str) -> dict[str, Any]:
    """Every figure, eager and compiled."""
    model, prompts, load_s = _model(smoke)
    out: dict[str, Any] = {"load_s": round(load_s, 2), "rows": rows, "steps": steps}
    for name, mode in (("eager", StepMode()), ("compiled", StepMode(compiled=backend))):
        started = time.perf_counter()
        first = first_request(model, prompts[0], mode)
        compiles = bucket_compiles(model, prompts, rows, mode)
        out[name] = {
            "first_request_s": first,
            "bucket_first_step_extra_s": compiles,
            "compile_total_s": round(sum(compiles.values()), 2),
            "steady_tok_s": steady(model, prompts, rows, steps, mode),
            "churning_tok_s": churning(model, prompts, rows, steps, mode),
            "measured_in_s": round(time.perf_counter() - started, 1),
        }
    return out


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure, print, write the JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compile", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a tiny model, aot_eager, seconds")
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/compile.json"))
    args = parser.parse_args(argv)
    if args.smoke:
        args.rows, args.steps, args.backend = min(args.rows, 4), min(args.steps, 6), "aot_eager"
    figures = measure(args.smoke, args.rows, args.steps, args.backend)
    figures.update(backend=args.backend, torch=torch.__version__)
    out(f"load {figures['load_s']} s")
    for name in ("eager", "compiled"):
        out(f"{name}: {figures[name]}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2))
    out(f"wrote {args.out}")
    return figures


if __name__ == "__main__":
    main()
