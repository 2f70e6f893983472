"""A batch whose rows keep coming and going, for the static-shape step tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.unit.factories import sampling
from worker.decode import DecodeBatch, Row

NUCLEUS = {"temperature": 0.7, "top_p": 0.9}
SPEC = {"temperature": 0.7, "top_p": 0.8, "presence_penalty": 0.5, "frequency_penalty": -0.5}


def row(i: int, params: dict[str, float] | None = None) -> Row:
    """The i-th row: prompts of 2-6 tokens, 3-12 new tokens, greedy unless ``params``."""
    prompt = [3 + (i * 7 + j) % 40 for j in range(2 + i % 5)]
    chosen = {"temperature": 0.0} if params is None else params
    return Row(i, prompt, sampling(max_tokens=3 + (i * 5) % 10, **chosen), seed=1000 + i)


@dataclass
class Churn:
    """What a churning run did: every row admitted, and the live rows of each step."""

    rows: list[Row] = field(default_factory=list)
    live: list[int] = field(default_factory=list)

    def tokens(self) -> dict[int, list[int]]:
        """Each finished row's tokens, by its number."""
        return {r.handle: r.tokens for r in self.rows}


def churn(
    batch: DecodeBatch,
    steps: int,
    *,
    most: int = 16,
    least: int = 13,
    params: dict[str, float] | None = None,
    run: Churn | None = None,
) -> Churn:
    """Run ``steps`` decode steps, refilling the batch to ``most`` rows whenever it falls to
    ``least``; with ``run``, go on from an earlier run's rows (numbering continues)."""
    run = Churn() if run is None else run
    for _ in range(steps):
        if len(batch.rows) <= least:
            joining = [row(len(run.rows) + k, params) for k in range(most - len(batch.rows))]
            run.rows += joining
            batch.admit(joining)
        run.live.append(len(batch.rows))
        batch.step()
    return run


def drain(batch: DecodeBatch) -> None:
    """Step until every row finished."""
    while batch.rows:
        batch.step()


def same_rows(a: dict[int, list[int]], b: dict[int, list[int]]) -> bool:
    """Whether the rows both runs admitted (most of them) decoded the same tokens: a run whose
    rows finish a step later admits fewer in as many steps."""
    both = a.keys() & b.keys()
    return len(both) >= 0.75 * max(len(a), len(b)) and all(a[k] == b[k] for k in both)
