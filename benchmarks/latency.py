"""Where a lone request's time goes: naive ``generate``, our decode loop alone, ours end to end.

``python -m benchmarks.latency [--requests N] [--params plain|nucleus|spec] [--idle-stack]``. At
concurrency 1 B1 compares ours (HTTP, two Kafka hops, the worker's loop) with ``model.generate``
in a loop. This splits ours into the decode loop (the backend alone, no HTTP, no Kafka) and the
rest (the answer's wall time less the worker's ``prediction_time_ms``). Each part runs in a
process of its own, one after the other with the same warm-up: two models in one process give
torch two OpenMP thread teams on the same cores, which slows both. ``--idle-stack`` runs the two
model-only parts beside an idle broker, worker and front end, as B1's naive run and ours share
the machine with them. Both generators make exactly ``NEW_TOKENS`` tokens (``min_new_tokens`` for
``generate``; our loop's answers are 32 tokens on these prompts), so a token costs the same work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx

from benchmarks.local import MODEL, NEW_TOKENS, PARAMS, model_dir, prompt
from benchmarks.stack import HEADERS, broker, service

Sample = tuple[float, int]  # (seconds, generated tokens)
_PARTS = ("naive", "loop")


def _naive(requests: int, params: dict[str, Any]) -> list[Sample]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(model_dir())
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir(), dtype=torch.bfloat16)
    model.eval()

    def one(i: int) -> Sample:
        chat = [{"role": "user", "content": prompt(i)}]
        ids: Any = tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
        started = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                ids,
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                do_sample=True,
                temperature=params["temperature"],
                top_p=params["top_p"],
            )
        return time.perf_counter() - started, int(out.shape[1] - ids.shape[1])

    one(0)  # warm-up, as each part gets
    return [one(i) for i in range(1, requests + 1)]


async def _loop(requests: int, params: dict[str, Any]) -> list[Sample]:
    from schemas.registry import load_registry
    from schemas.settings import Settings
    from schemas.wire import ChatMessage, Sampling, TaskMessage
    from worker.backends.transformers import TransformersBackend
    from worker.task import Completion, Task

    settings = Settings(device="cpu", cache_dir=model_dir().parents[1])  # B1's max batch, 32
    backend = await TransformersBackend.load(load_registry().get(MODEL), settings)

    async def one(i: int) -> Sample:
        message = TaskMessage(
            request_id=str(uuid.uuid4()),
            choice_index=0,
            model=MODEL,
            prompt="",
            messages=(ChatMessage(role="user", content=prompt(i)),),
            sampling=Sampling(max_tokens=NEW_TOKENS, **params),
            enqueued_at=time.time(),
        )
        started = time.perf_counter()
        async for _, event in backend.run([Task(message, "bench", 0, i, time.time(), time.time())]):
            if isinstance(event, Completion):
                return time.perf_counter() - started, event.completion_tokens
        raise RuntimeError("the task ended without a completion")

    try:
        await one(0)
        return [await one(i) for i in range(1, requests + 1)]
    finally:
        await backend.aclose()


async def _http(requests: int, params: dict[str, Any]) -> tuple[list[Sample], list[float]]:
    """Ours end to end, and each answer's time outside the worker's generation."""
    samples: list[Sample] = []
    outside: list[float] = []
    with broker() as bootstrap:
        async with (
            service(bootstrap, [MODEL]) as stack,
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{stack.port}", headers=HEADERS, timeout=120
            ) as client,
        ):
            for i in range(requests + 1):
                body = {"model": MODEL, "prompt": prompt(i), "max_tokens": NEW_TOKENS, **params}
                started = time.perf_counter()
                response = await client.post("/v1/completion", json=body)
                elapsed = time.perf_counter() - started
                response.raise_for_status()
                usage = response.json()["usage"]
                if i:  # request 0 is the warm-up
                    samples.append((elapsed, int(usage["completion_tokens"])))
                    outside.append(elapsed - usage["prediction_time_ms"] / 1000)
    return samples, outside


def _part(name: str, requests: int, params_name: str) -> list[Sample]:
    """One model-only part in a process of its own (its samples come back as JSON)."""
    cmd = [sys.executable, "-m", "benchmarks.latency", "--part", name]
    cmd += ["--requests", str(requests), "--params", params_name]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [tuple(s) for s in json.loads(out.strip().splitlines()[-1])]


async def _model_parts(
    requests: int, params_name: str, idle_stack: bool
) -> tuple[list[Sample], list[Sample]]:
    """Naive, then the loop, each in its own process; beside an idle stack when asked."""

    async def both() -> tuple[list[Sample], list[Sample]]:
        naive = await asyncio.to_thread(_part, "naive", requests, params_name)
        return naive, await asyncio.to_thread(_part, "loop", requests, params_name)

    if not idle_stack:
        return await both()
    with broker() as bootstrap:
        async with service(bootstrap, [MODEL]):
            return await both()


def _row(name: str, samples: list[Sample], base: list[Sample] | None) -> str:
    p50 = statistics.median(s for s, _ in samples) * 1000
    per_token = sum(s for s, _ in samples) / max(1, sum(t for _, t in samples)) * 1000
    ratio = ""
    if base is not None:
        base_tps = sum(t for _, t in base) / sum(s for s, _ in base)
        ours_tps = sum(t for _, t in samples) / sum(s for s, _ in samples)
        ratio = f"  tokens/s vs naive {ours_tps / base_tps:.2f}x"
    tokens = statistics.mean(t for _, t in samples)
    return f"{name:<24} p50 {p50:7.1f} ms  {per_token:6.2f} ms/token  {tokens:5.1f} tokens{ratio}"


def main() -> None:
    """Parse the arguments; run one part, or every part and print the breakdown."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__)
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--params", choices=sorted(PARAMS), default="plain")
    parser.add_argument("--part", choices=_PARTS, help=argparse.SUPPRESS)
    parser.add_argument("--idle-stack", action="store_true")
    args = parser.parse_args()
    params = PARAMS[args.params]
    if args.part == "naive":
        print(json.dumps(_naive(args.requests, params)))
        return
    if args.part == "loop":
        print(json.dumps(asyncio.run(_loop(args.requests, params))))
        return
    naive, loop = asyncio.run(_model_parts(args.requests, args.params, args.idle_stack))
    http, outside = asyncio.run(_http(args.requests, params))
    beside = " (beside an idle stack)" if args.idle_stack else ""
    print(f"c=1, {args.requests} requests each, {args.params} parameters {params}{beside}")
    print(_row("naive generate", naive, None))
    print(_row("ours: decode loop alone", loop, naive))
    print(_row("ours: HTTP + Kafka", http, naive))
    p50 = statistics.median(outside) * 1000
    print(f"ours outside generation (HTTP, Kafka, queueing): p50 {p50:.1f} ms")


if __name__ == "__main__":
    main()
