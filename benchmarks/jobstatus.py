"""``python -m benchmarks.jobstatus [--results N]``: what ``jobs status`` costs as the shared
results topic grows.

A 10-line ``echo`` job is submitted with the CLI and answered by ``benchmarks.stack``'s
worker and front end; then ``N`` (1,000,000) results of other requests are written to the
shared results topic, as a busy cluster retains them, and ``kafka-completions jobs status``
is timed (three runs, each a process of its own, as an operator runs it). The script uses
only the CLI and the topics, so the same file measures an older checkout in the same session.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from benchmarks.stack import API_KEY, broker, service

_RESULT = {
    "v": 1,
    "request_id": "",
    "choice_index": 0,
    "model": "echo",
    "worker_id": "bench",
    "choice": {
        "text": "filler " * 20,
        "finish_reason": "length",
        "prompt_tokens": 5,
        "completion_tokens": 16,
        "prediction_time_ms": 1,
        "created": 1_700_000_000,
    },
}


def cli(env: dict[str, str], *args: str) -> tuple[float, str]:
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "producer.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    )
    return time.perf_counter() - began, done.stdout.strip()


async def flood(bootstrap: str, topic: str, count: int) -> float:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024, acks=1
    )
    await producer.start()
    began = time.perf_counter()
    try:
        for start in range(0, count, 5000):
            sends = []
            for i in range(start, min(count, start + 5000)):
                value = json.dumps(_RESULT | {"request_id": f"other-{i}"}).encode()
                sends.append(await producer.send(topic, value, str(i).encode()))
            await asyncio.gather(*sends)
    finally:
        await producer.stop()
    return time.perf_counter() - began


async def main(results: int) -> dict[str, Any]:
    figures: dict[str, Any] = {"machine": platform.processor() or platform.machine()}
    with broker() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        async with service(bootstrap, ["echo"]) as stack:
            env = {
                **os.environ,
                "KC_KAFKA_BOOTSTRAP": bootstrap,
                "KC_TOPIC_PREFIX": stack.prefix,
                "KC_API_KEYS": API_KEY,
                "KC_LOG_LEVEL": "WARNING",
            }
            job = Path(tmp) / "job.jsonl"
            rows = [{"custom_id": f"c{i}", "model": "echo", "prompt": "hi"} for i in range(10)]
            job.write_text("".join(json.dumps(r) + "\n" for r in rows))
            cli(env, "submit", str(job), "--job", "bench-status")
            out = Path(tmp) / "out.jsonl"
            cli(env, "collect", "--job", "bench-status", "-o", str(out), "--no-progress")
            before = [cli(env, "jobs", "status", "bench-status")[0] for _ in range(3)]
            figures["status_s_before_flood"] = [round(s, 2) for s in before]
            took = await flood(bootstrap, f"{stack.prefix}completions.results", results)
            figures["flooded"] = {"results": results, "s": round(took, 1)}
            after = [cli(env, "jobs", "status", "bench-status") for _ in range(3)]
            figures["status_s_after_flood"] = [round(s, 2) for s, _ in after]
            figures["status_line"] = after[-1][1]
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.jobstatus", description=__doc__)
    parser.add_argument("--results", type=int, default=1_000_000, help="results to retain")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.results)), indent=2))
