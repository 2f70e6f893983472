"""The local backend end to end on a tiny random Llama: what it refuses, and its penalties.

The tokenizer is one token per character (``" "`` is 0, ``"!"`` 1, ...), so a completion's
text gives back exactly the tokens the decode loop chose.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from schemas.registry import ModelSpec
from tests.unit.factories import sampling, task, task_message
from tests.unit.worker.tiny_model import tiny_llama
from worker.backends.transformers import TransformersBackend
from worker.task import Completion, Failure, Outcome

_VOCAB = 64
_CONTEXT = 96
_SPEC = ModelSpec(name="tiny", backend="transformers", path="/unused", chat_template=False)


class _CharTokenizer:
    """Characters ``" "`` to ``"_"`` as tokens 0..63; no chat template."""

    pad_token_id = 0
    bos_token_id = None
    chat_template = None

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": [ord(c) - 32 for c in text]}

    def decode(self, tokens: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(32 + t) for t in tokens)


@pytest.fixture(scope="module")
def model() -> Any:
    """Two random layers (float32: deterministic); an end-of-sequence token it never emits."""
    tiny = tiny_llama(_VOCAB, _CONTEXT, seed=99)
    tiny.generation_config.eos_token_id = _VOCAB + 1
    return tiny


@pytest.fixture
def forwards(model: Any) -> Iterator[list[int]]:
    """One entry per forward pass of the model while the test runs."""
    calls: list[int] = []
    hook = model.register_forward_pre_hook(lambda *_: calls.append(1))
    yield calls
    hook.remove()


async def _outcome(model: Any, prompt: str, **params: Any) -> Outcome:
    backend = TransformersBackend(_SPEC, model, _CharTokenizer(), max_batch=4, token_budget=4096)
    message = task_message(model="tiny", prompt=prompt, sampling=sampling(**params))
    try:
        outcomes = [event async for _, event in backend.run([task(message)])]
    finally:
        await backend.aclose()
    assert len(outcomes) == 1
    outcome = outcomes[0]
    assert isinstance(outcome, Completion | Failure)
    return outcome


@pytest.mark.parametrize("max_tokens", [_CONTEXT - 39, _CONTEXT])
async def test_prompt_plus_max_tokens_beyond_the_context_is_refused_unrun(
    model: Any, forwards: list[int], max_tokens: int
) -> None:
    outcome = await _outcome(model, "A" * 40, max_tokens=max_tokens)
    assert isinstance(outcome, Failure)
    assert outcome.code == "invalid_request"  # the front end answers 400
    assert "prompt is 40 tokens" in outcome.message
    assert f"max_tokens is {max_tokens}" in outcome.message
    assert f"holds {_CONTEXT} tokens" in outcome.message
    assert forwards == []


async def test_a_request_that_exactly_fills_the_context_runs(model: Any) -> None:
    outcome = await _outcome(model, "A" * 40, max_tokens=_CONTEXT - 40, temperature=0.0)
    assert isinstance(outcome, Completion)
    assert (outcome.prompt_tokens, outcome.completion_tokens) == (40, _CONTEXT - 40)


async def test_a_task_whose_deadline_passed_while_waiting_is_never_run(
    model: Any, forwards: list[int]
) -> None:
    backend = TransformersBackend(_SPEC, model, _CharTokenizer(), max_batch=4, token_budget=4096)
    message = task_message(model="tiny", prompt="ABC", deadline=1.0)
    try:
        outcomes = [event async for _, event in backend.run([task(message)])]
    finally:
        await backend.aclose()
    assert [o.code for o in outcomes if isinstance(o, Failure)] == ["deadline_exceeded"]
    assert forwards == []


def _greedy_reference(
    model: Any, prompt: list[int], n: int, presence: float, frequency: float, count_prompt: bool
) -> list[int]:
    """Greedy decoding by full forward passes, OpenAI's penalties applied by hand."""
    generated: list[int] = []
    with torch.inference_mode():
        for _ in range(n):
            logits = model(torch.tensor([prompt + generated])).logits[0, -1].float()
            counted = (prompt if count_prompt else []) + generated
            counts = torch.bincount(torch.tensor(counted, dtype=torch.long), minlength=_VOCAB)
            logits = logits - counts * frequency - (counts > 0).float() * presence
            generated.append(int(logits.argmax()))
    return generated


# Most of the vocabulary, so that unpenalised greedy decoding soon picks prompt tokens: a
# penalty over the prompt too would then show.
_PROMPT = "THE QUICK BROWN FOX JUMPS OVER 0123456789 LAZY DOGS!?"


@pytest.mark.parametrize(
    ("presence", "frequency"), [(2.0, 0.0), (0.0, 1.5), (-2.0, 0.0), (0.5, 0.5)]
)
async def test_penalties_count_the_generated_tokens_only(
    model: Any, presence: float, frequency: float
) -> None:
    n = 16
    ids = _CharTokenizer()(_PROMPT)["input_ids"]
    expected = _greedy_reference(model, ids, n, presence, frequency, count_prompt=False)
    # The test can tell: counting the prompt too would decode something else here.
    assert expected != _greedy_reference(model, ids, n, presence, frequency, count_prompt=True)
    outcome = await _outcome(
        model,
        _PROMPT,
        max_tokens=n,
        temperature=0.0,
        presence_penalty=presence,
        frequency_penalty=frequency,
    )
    assert isinstance(outcome, Completion)
    assert _CharTokenizer()(outcome.text)["input_ids"] == expected
