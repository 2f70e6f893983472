"""benchmarks.compile --smoke: compile time per bucket, start-up, tokens/s; eager and compiled."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.compile import main


@pytest.mark.timeout(180)
def test_the_smoke_run_gives_every_figure_for_both_modes(tmp_path: Path) -> None:
    torch._dynamo.reset()
    figures = main(["--smoke", "--out", str(tmp_path / "compile.json")], out=lambda _: None)
    assert (tmp_path / "compile.json").is_file()
    assert figures["backend"] == "aot_eager" and figures["rows"] == 4
    for mode in ("eager", "compiled"):
        assert set(figures[mode]["bucket_first_step_extra_s"]) == {1, 2, 3, 4}
        assert figures[mode]["steady_tok_s"] > 0 and figures[mode]["churning_tok_s"] > 0
    # Tracing a graph costs time that an eager first step does not.
    assert figures["compiled"]["compile_total_s"] > figures["eager"]["compile_total_s"]
