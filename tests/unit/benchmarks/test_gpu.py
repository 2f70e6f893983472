"""benchmarks.gpu --smoke: every system on a tiny model on CPU, with torch and transformers only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
# What the GPU machine lacks: importing any of them there fails, so it must fail here too.
_ABSENT = ("pydantic", "pydantic_settings", "aiokafka", "fastapi", "prometheus_client", "devstack")
_RUN = (
    "import sys\n"
    f"sys.modules.update(dict.fromkeys({_ABSENT!r}))\n"
    "from benchmarks.gpu import main\n"
    "main(sys.argv[1:], out=lambda line: None)\n"
)


@pytest.mark.timeout(180)
def test_the_smoke_run_measures_every_system_but_the_graphs_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    subprocess.run(
        [sys.executable, "-c", _RUN, "--smoke", "--out", str(out)],
        cwd=ROOT,
        check=True,
        timeout=170,
    )
    report = json.loads(out.read_text())
    assert report["meta"]["gpu_figures"] is False
    cells = {(c["sequences"], c["system"]): c for c in report["cells"]}
    assert len(cells) == 10  # 2 concurrencies x 5 systems
    for sequences in (2, 5):
        assert "need CUDA" in cells[(sequences, "ours graphs")]["skipped"]
        for system in ("ours eager", "generate_batch", "naive generate", "forward alone"):
            assert cells[(sequences, system)]["tok_s"] > 0
        # Greedy in float32: ours and transformers' batching decode naive generate's tokens.
        assert cells[(sequences, "ours eager")]["agree"] == 1.0
        assert cells[(sequences, "generate_batch")]["agree"] == 1.0
    (first, _) = report["ratios"]
    assert first["eager_vs_generate_batch"] > 0 and first["graphs_vs_eager"] is None
