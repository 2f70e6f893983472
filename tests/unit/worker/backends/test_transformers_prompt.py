"""The first ids each local model is fed, seen at its forward pass: one BOS at most."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from schemas.registry import ModelSpec, load_registry
from tests.conftest import cache_dir
from tests.llama2_fixture import Llama2Fixture
from tests.unit.factories import sampling, task, task_message
from worker.backends.transformers import TransformersBackend
from worker.task import Completion, Failure
from worker.weights import load_weights

SMOLLM2 = "smollm2-135m-instruct"


async def _fed(spec: ModelSpec, **message: Any) -> tuple[list[int], Completion | Failure]:
    """The ids of the first forward pass (the prefill) and the task's outcome."""
    model, tokenizer = load_weights(spec, cache_dir(), torch.device("cpu"), "sdpa")
    fed: list[list[int]] = []
    forward = model.forward

    def spy(*args: Any, **kwargs: Any) -> Any:
        fed.append(kwargs["input_ids"][0].tolist())
        return forward(*args, **kwargs)

    model.forward = spy
    backend = TransformersBackend(spec, model, tokenizer, max_batch=4, token_budget=8192)
    try:
        job = task(task_message(model=spec.name, sampling=sampling(max_tokens=2), **message))
        outcomes = [event async for _, event in backend.run([job])]
    finally:
        await backend.aclose()
    (outcome,) = outcomes
    assert isinstance(outcome, Completion | Failure)
    return (fed[0] if fed else []), outcome


def _llama(name: str, path: Path, chat: bool) -> ModelSpec:
    return ModelSpec(name=name, backend="transformers", path=str(path), chat_template=chat)


async def test_llama2_chat_is_fed_metas_format_with_one_bos(llama2: Llama2Fixture) -> None:
    ids, outcome = await _fed(_llama("llama-2-7b-chat", llama2.chat, chat=True))
    # <s> [INST] Once upon a time [/INST]
    assert ids == [1, 518, 25580, 29962, 9038, 2501, 263, 931, 518, 29914, 25580, 29962]
    assert isinstance(outcome, Completion) and outcome.prompt_tokens == len(ids)


async def test_llama2_base_is_fed_the_raw_prompt_with_one_bos(llama2: Llama2Fixture) -> None:
    ids, outcome = await _fed(_llama("llama-2-7b", llama2.base, chat=False))
    assert ids == [1, 9038, 2501, 263, 931]  # <s> Once upon a time
    assert isinstance(outcome, Completion) and outcome.prompt_tokens == 5


async def test_a_conversation_the_template_refuses_fails_the_task_only(
    llama2: Llama2Fixture,
) -> None:
    turns = ({"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"})
    ids, outcome = await _fed(_llama("llama-2-7b-chat", llama2.chat, chat=True), messages=turns)
    assert ids == []  # never reached the model
    assert isinstance(outcome, Failure) and outcome.code == "invalid_request"
    assert "alternate user/assistant" in outcome.message


@pytest.mark.model
async def test_smollm2_is_fed_its_template_with_no_bos_added() -> None:
    spec = load_registry().get(SMOLLM2)
    ids, outcome = await _fed(spec)
    # Its template starts with <|im_start|>, which is also its BOS (id 1); its tokenizer adds
    # none, so the first ids are the template's: <|im_start|> system \n ...
    assert ids[:3] == [1, 9690, 198]
    assert isinstance(outcome, Completion) and outcome.prompt_tokens == len(ids)
