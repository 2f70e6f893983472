"""Where a lone request's time goes: naive ``generate``, our decode loop alone, ours end to end.

``python -m benchmarks.latency [--requests N] [--params plain|nucleus|spec]``. At concurrency 1
B1 compares ours (HTTP, two Kafka hops, the worker's loop) with ``model.generate`` in a loop.
This splits ours into the decode loop (the backend alone, no HTTP, no Kafka, in this process)
and the rest (the answer's wall time less the worker's ``prediction_time_ms``), each against
naive ``generate`` on the same prompts and parameters, run alternately in one process so the
ratios hold on a noisy machine. Figures are per request (p50) and per generated token.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from typing import Any

import httpx

from benchmarks.local import MODEL, NEW_TOKENS, PARAMS, model_dir, prompt
from benchmarks.stack import HEADERS, broker, service
from schemas.registry import load_registry
from schemas.settings import Settings
from schemas.wire import ChatMessage, Sampling, TaskMessage
from worker.backends.transformers import TransformersBackend
from worker.task import Completion, Task

Sample = tuple[float, int]  # (seconds, generated tokens)


class Naive:
    """``model.generate`` one prompt at a time (B1's naive system)."""

    def __init__(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self._tokenizer: Any = AutoTokenizer.from_pretrained(model_dir())
        model: Any = AutoModelForCausalLM.from_pretrained(model_dir(), dtype=torch.bfloat16)
        self._model = model.eval()

    def one(self, i: int, params: dict[str, Any]) -> Sample:
        """One generation: its wall time and tokens."""
        chat = [{"role": "user", "content": prompt(i)}]
        ids: Any = self._tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
        started = time.perf_counter()
        with self._torch.inference_mode():
            out = self._model.generate(
                ids,
                max_new_tokens=NEW_TOKENS,
                do_sample=True,
                temperature=params["temperature"],
                top_p=params["top_p"],
            )
        return time.perf_counter() - started, int(out.shape[1] - ids.shape[1])


async def _loop_one(backend: TransformersBackend, i: int, params: dict[str, Any]) -> Sample:
    message = TaskMessage(
        request_id=str(uuid.uuid4()),
        choice_index=0,
        model=MODEL,
        prompt="",
        messages=(ChatMessage(role="user", content=prompt(i)),),
        sampling=Sampling(max_tokens=NEW_TOKENS, **params),
        enqueued_at=time.time(),
    )
    task = Task(message, "bench", 0, i, time.time())
    started = time.perf_counter()
    async for _, event in backend.run([task]):
        if isinstance(event, Completion):
            return time.perf_counter() - started, event.completion_tokens
    raise RuntimeError("the task ended without a completion")


async def _http_one(client: httpx.AsyncClient, i: int, params: dict[str, Any]) -> Sample:
    body = {"model": MODEL, "prompt": prompt(i), "max_tokens": NEW_TOKENS, **params}
    started = time.perf_counter()
    response = await client.post("/v1/completion", json=body)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    usage = response.json()["usage"]
    # The answer's time outside the worker's generation: HTTP, Kafka, queueing, assembly.
    _HTTP_PREDICTION.append(usage["prediction_time_ms"] / 1000)
    return elapsed, int(usage["completion_tokens"])


_HTTP_PREDICTION: list[float] = []


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


async def _measure(requests: int, params_name: str) -> None:
    params = PARAMS[params_name]
    naive = Naive()
    settings = Settings(device="cpu", worker_max_batch=1, cache_dir=model_dir().parents[1])
    backend = await TransformersBackend.load(load_registry().get(MODEL), settings)
    naive_s: list[Sample] = []
    loop_s: list[Sample] = []
    http_s: list[Sample] = []
    with broker() as bootstrap:
        async with (
            service(bootstrap, [MODEL]) as stack,
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{stack.port}", headers=HEADERS, timeout=120
            ) as client,
        ):
            # The same warm-up for each, then alternate so drift in the machine hits all three.
            naive.one(0, params)
            await _loop_one(backend, 0, params)
            await _http_one(client, 0, params)
            _HTTP_PREDICTION.clear()
            for i in range(1, requests + 1):
                naive_s.append(naive.one(i, params))
                loop_s.append(await _loop_one(backend, i, params))
                http_s.append(await _http_one(client, i, params))
    await backend.aclose()
    print(f"c=1, {requests} requests each, {params_name} parameters {params}")
    print(_row("naive generate", naive_s, None))
    print(_row("ours: decode loop alone", loop_s, naive_s))
    print(_row("ours: HTTP + Kafka", http_s, naive_s))
    outside = [e - p for (e, _), p in zip(http_s, _HTTP_PREDICTION, strict=True)]
    p50 = statistics.median(outside) * 1000
    print(f"ours outside generation (HTTP, Kafka, queueing): p50 {p50:.1f} ms")


def main() -> None:
    """Parse the arguments and print the breakdown."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--params", choices=sorted(PARAMS), default="plain")
    args = parser.parse_args()
    asyncio.run(_measure(args.requests, args.params))


if __name__ == "__main__":
    main()
