"""``python -m benchmarks.fairness [--skip-huge]``: bulk work shared across API keys.

Everything through the official openai SDK, as a team would call it, against a front end and
one worker serving the local model and ``echo`` (``benchmarks.stack``):

- F1 alone: key B's 8-line chat batch on the local model, create to ``completed``.
- F2 beside 600: the same batch created 2 s after key A's 600-line batch; B's time, the ratio
  to F1, and how many of A's lines were left when B completed (A is then cancelled).
- F3 beside 20,000: the same beside a 20,000-line batch of A (``--skip-huge`` leaves it out:
  on a tree that publishes every line at create, B waits for all 20,000).
- F4 lone lines/s: a 200-line batch on the local model, and a 10,000-line batch on ``echo``,
  each run twice in a row (cold, then warm).
- F5 create: ``batches.create`` of a 50,000-line ``echo`` file (the upload timed apart).

Only the SDK touches the service, so the same file measures any tree: copy it into an older
checkout and run it there, in the same session, for the "before" figures.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import platform
import time
from typing import Any

import openai
from openai.types import Batch

from benchmarks.stack import API_KEY, broker, service

KEY_B = "kc-bench-key-b"
LOCAL = "smollm2-135m-instruct"
ECHO = "echo"
_QUESTIONS = ("Name a colour.", "Name a river.", "Name a fruit.", "Name a city.")
_ENDED = ("completed", "failed", "expired", "cancelled")


def chat_lines(n: int, model: str, prefix: str, max_tokens: int = 16) -> bytes:
    rows = (
        {
            "custom_id": f"{prefix}-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": model,
                "messages": [{"role": "user", "content": _QUESTIONS[i % len(_QUESTIONS)]}],
                "max_tokens": max_tokens,
                "temperature": 0,
            },
        }
        for i in range(n)
    )
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


async def upload(sdk: openai.AsyncOpenAI, content: bytes) -> str:
    made = await sdk.files.create(file=("in.jsonl", io.BytesIO(content)), purpose="batch")
    return made.id


async def create(sdk: openai.AsyncOpenAI, file_id: str) -> Batch:
    return await sdk.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )


async def until_ended(sdk: openai.AsyncOpenAI, batch_id: str, poll_s: float = 0.1) -> Batch:
    """Poll as a caller does (the SDK has no wait for a batch)."""
    while True:
        batch = await sdk.batches.retrieve(batch_id)
        if batch.status in _ENDED:
            return batch
        await asyncio.sleep(poll_s)


async def small_batch(sdk_b: openai.AsyncOpenAI, file_b: str) -> float:
    began = time.perf_counter()
    batch = await create(sdk_b, file_b)
    ended = await until_ended(sdk_b, batch.id)
    assert ended.status == "completed", ended
    return time.perf_counter() - began


async def beside(
    sdk_a: openai.AsyncOpenAI, sdk_b: openai.AsyncOpenAI, big_lines: int, file_b: str
) -> dict[str, Any]:
    big = await create(sdk_a, await upload(sdk_a, chat_lines(big_lines, LOCAL, "a")))
    await asyncio.sleep(2.0)
    took = await small_batch(sdk_b, file_b)
    a = await sdk_a.batches.retrieve(big.id)
    counts = a.request_counts
    left = big_lines - (counts.completed + counts.failed if counts else 0)
    if a.status not in _ENDED:  # before: B ran after all of A, which has ended by now
        await sdk_a.batches.cancel(big.id)
    await until_ended(sdk_a, big.id, 0.5)
    return {"b_s": round(took, 2), "a_lines_left": left}


async def lone(sdk: openai.AsyncOpenAI, lines: int, model: str) -> dict[str, Any]:
    file_id = await upload(sdk, chat_lines(lines, model, "lone", 8))
    began = time.perf_counter()
    batch = await create(sdk, file_id)
    ended = await until_ended(sdk, batch.id)
    took = time.perf_counter() - began
    assert ended.status == "completed", ended
    return {"lines": lines, "s": round(took, 2), "lines_per_s": round(lines / took, 1)}


async def create_latency(sdk: openai.AsyncOpenAI, lines: int) -> dict[str, Any]:
    began = time.perf_counter()
    file_id = await upload(sdk, chat_lines(lines, ECHO, "big", 1))
    uploaded = time.perf_counter()
    batch = await create(sdk, file_id)
    created = time.perf_counter()
    if (await sdk.batches.retrieve(batch.id)).status not in _ENDED:
        await sdk.batches.cancel(batch.id)
    await until_ended(sdk, batch.id, 0.5)
    return {
        "lines": lines,
        "upload_s": round(uploaded - began, 2),
        "create_s": round(created - uploaded, 2),
    }


async def main(skip_huge: bool) -> dict[str, Any]:
    figures: dict[str, Any] = {"machine": platform.processor() or platform.machine()}
    env = {"KC_API_KEYS": f"{API_KEY},{KEY_B}", "KC_BATCH_MAX_BYTES": str(200 * 1024 * 1024)}
    with broker() as bootstrap:
        async with service(bootstrap, [LOCAL, ECHO], env) as stack:
            url = f"http://127.0.0.1:{stack.port}/v1"
            sdk_a = openai.AsyncOpenAI(base_url=url, api_key=API_KEY, max_retries=0, timeout=600)
            sdk_b = openai.AsyncOpenAI(base_url=url, api_key=KEY_B, max_retries=0, timeout=600)
            file_b = await upload(sdk_b, chat_lines(8, LOCAL, "b"))
            await small_batch(sdk_b, file_b)  # warm-up: the model's first batches are slower
            alone = [await small_batch(sdk_b, file_b) for _ in range(3)]
            figures["F1_alone_s"] = [round(s, 2) for s in alone]
            f1 = sorted(alone)[1]
            f2 = await beside(sdk_a, sdk_b, 600, file_b)
            figures["F2_beside_600"] = f2 | {"ratio": round(f2["b_s"] / f1, 2)}
            if not skip_huge:
                f3 = await beside(sdk_a, sdk_b, 20_000, file_b)
                figures["F3_beside_20000"] = f3 | {"ratio": round(f3["b_s"] / f1, 2)}
            # Each twice: the first on a model the bulk lane has not served yet (cold), the
            # second as a busy fleet runs it (the dispatcher's window already open).
            figures["F4_lone_local"] = [await lone(sdk_a, 200, LOCAL) for _ in range(2)]
            figures["F4_lone_echo"] = [await lone(sdk_a, 10_000, ECHO) for _ in range(2)]
            figures["F5_create_50000"] = await create_latency(sdk_a, 50_000)
            await sdk_a.close()
            await sdk_b.close()
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fairness", description=__doc__)
    parser.add_argument("--skip-huge", action="store_true", help="leave out F3")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.skip_huge)), indent=2))
