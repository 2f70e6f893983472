"""``python -m benchmarks.run [--quick] [--only B1,B2,B3,B4]``: run, print a table, write JSON.

Results go to ``benchmarks/results/<UTC time>.json`` (gitignored). Ratios are computed
within one run only: the machine is shared and noisy, so figures of different runs do not
compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

from benchmarks.ceiling import SYSTEM as CEILING
from benchmarks.local import NAIVE, OURS, SERVE, b1
from benchmarks.pipeline import b2, b3
from benchmarks.stack import broker
from benchmarks.stats import Run
from benchmarks.tracing import b4

RESULTS = Path(__file__).parent / "results"
_COLUMNS = (
    "benchmark",
    "system",
    "load",
    "requests",
    "errors",
    "tokens_per_s",
    "requests_per_s",
    "p50_ms",
    "p99_ms",
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer requests, shorter steps")
    parser.add_argument("--only", default="B1,B2,B3,B4", help="comma-separated benchmarks")
    return parser


async def _all(quick: bool, only: set[str]) -> list[Run]:
    runs: list[Run] = []
    with broker() as bootstrap:
        if "B1" in only:
            requests = 16 if quick else 64
            runs += await b1(bootstrap, requests, 4 if quick else 16, [1, 8, 32])
        if "B2" in only:
            rates = [250.0, 500.0, 1000.0, 1500.0, 2000.0, 2500.0, 3000.0]
            runs += await b2(bootstrap, 100.0, rates, 5.0 if quick else 30.0)
        if "B3" in only:
            runs += await b3(bootstrap, 2000 if quick else 10_000)
        if "B4" in only:
            runs += await b4(bootstrap, 100.0, 10.0 if quick else 30.0)
    return runs


def ratios(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """B1: ours against naive and transformers serve in each row, ours spec against plain, and
    each system's share of the forward passes alone at its concurrency."""
    runs: dict[tuple[str, str], list[float]] = {}
    for s in summaries:
        if s["benchmark"] == "B1":
            runs.setdefault((s["system"], s["load"]), []).append(s["tokens_per_s"])
    by = {key: sum(v) / len(v) for key, v in runs.items()}  # a cell run twice: the mean
    out = []
    for (system, load), ours in by.items():
        if system != OURS:
            continue
        level, params = load.split(" ", 1)
        naive = by.get((NAIVE, f"c=1 {params}"))
        hf = by.get((SERVE, load))
        plain = by.get((OURS, f"{level} plain"))
        row: dict[str, Any] = {
            "load": load,
            "ours_vs_naive": _ratio(ours, naive),
            "ours_vs_transformers_serve": _ratio(ours, hf),
            "ours_of_ceiling": _ratio(ours, by.get((CEILING, level))),
            "serve_of_ceiling": _ratio(hf, by.get((CEILING, level))),
        }
        if level == "c=1":
            row["naive_of_ceiling"] = _ratio(naive, by.get((CEILING, level)))
        if params == "spec" and plain:
            row["spec_vs_plain"] = round(ours / plain, 2)
        out.append(row)
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def _print(summaries: list[dict[str, Any]], ratio_rows: list[dict[str, Any]]) -> None:
    print(" | ".join(_COLUMNS))
    print(" | ".join("---" for _ in _COLUMNS))
    for s in summaries:
        print(" | ".join(str(s[c]) for c in _COLUMNS))
        rest = {k: v for k, v in s.items() if k not in _COLUMNS and k != "elapsed_s"}
        if rest:
            print("    " + ", ".join(f"{k}={v}" for k, v in rest.items()))
    for r in ratio_rows:
        print(
            f"B1 {r['load']}: ours/naive {r['ours_vs_naive']}x, "
            f"ours/transformers serve {r['ours_vs_transformers_serve']}x, "
            f"of the forward alone: ours {r['ours_of_ceiling']}, serve {r['serve_of_ceiling']}"
            + (f", naive {r['naive_of_ceiling']}" if "naive_of_ceiling" in r else "")
            + (f", ours spec/ours plain {r['spec_vs_plain']}x" if "spec_vs_plain" in r else "")
        )


def main() -> None:
    """Run the chosen benchmarks, print the table, write the JSON."""
    args = _parser().parse_args()
    logging.basicConfig(level=logging.WARNING)
    only = {b.strip().upper() for b in args.only.split(",")}
    runs = asyncio.run(_all(args.quick, only))
    summaries = [r.summary() for r in runs]
    ratio_rows = ratios(summaries)
    _print(summaries, ratio_rows)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / time.strftime("%Y%m%dT%H%M%SZ.json", time.gmtime())
    meta = {"quick": args.quick, "machine": platform.platform(), "cpus": _cpus()}
    out.write_text(json.dumps({"meta": meta, "runs": summaries, "ratios": ratio_rows}, indent=2))
    print(f"wrote {out}")


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
