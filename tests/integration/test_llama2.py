"""The five Llama-2 names through the whole pipeline, on Llama-2-format checkpoints built from
the real Llama-2 vocabulary (tests/llama2_fixture.py): front end -> Kafka -> workers -> caller."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from schemas.registry import Registry, load_registry
from schemas.settings import Settings
from tests.conftest import SPEC_EXAMPLE, make_settings
from tests.integration.harness import front_end, wait_live
from tests.llama2_fixture import CONTEXT, Llama2Fixture, scripted_checkpoint
from worker.prompting import PromptEncoder
from worker.service import serve_models
from worker.weights import load_tokenizer

pytestmark = [pytest.mark.kafka]

CHAT = ["llama-2-70b-chat", "llama-2-13b-chat", "llama-2-7b-chat"]
BASE = ["llama-2-70b", "llama-2-7b"]
SCRIPTED = "llama-2-scripted"
# What the scripted model says after each prompt (see scripted_checkpoint).
SCRIPTS = {
    "Once upon a time": " there was a cat . It sat",  # "▁." is one sentencepiece piece
    "My pet": " loves 🦙 and hay",  # the llama is four byte-fallback tokens
}


def _registry_toml(llama2: Llama2Fixture, scripted: Path) -> str:
    entries = [(n, llama2.chat, True) for n in CHAT] + [(n, llama2.base, False) for n in BASE]
    entries.append((SCRIPTED, scripted, False))
    return "".join(
        f'[models."{name}"]\nbackend = "transformers"\npath = "{path}"\n'
        f"chat_template = {str(chat).lower()}\n\n"
        for name, path, chat in entries
    )


def _scripted(llama2: Llama2Fixture, target: Path, tokenizer: Any) -> Path:
    def ids(text: str) -> list[int]:
        return [int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]

    # Sentencepiece writes each text's leading space as the first piece's "▁" itself.
    chains = {ids(prompt)[-1]: ids(text.removeprefix(" ")) for prompt, text in SCRIPTS.items()}
    return scripted_checkpoint(llama2.base, target, chains)


@pytest.fixture(scope="module")
async def llama_stack(
    kafka_bootstrap: str, llama2: Llama2Fixture, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """A front end and one worker serving the five names and the scripted model."""
    tokenizer = load_tokenizer(llama2.chat)
    root = tmp_path_factory.mktemp("llama2")
    scripted = _scripted(llama2, root / "scripted", tokenizer)
    (root / "models.toml").write_text(_registry_toml(llama2, scripted))
    registry = load_registry(root / "models.toml")
    settings = make_settings(kafka_bootstrap, registry_path=root / "models.toml")
    names = [*CHAT, *BASE, SCRIPTED]
    async with _worker(settings, registry, names), front_end(settings, registry) as client:
        await wait_live(client, *names)
        yield client, tokenizer


@contextlib.asynccontextmanager
async def _worker(settings: Settings, registry: Registry, names: list[str]) -> AsyncIterator[None]:
    stopping = asyncio.Event()
    task = asyncio.create_task(serve_models(names, settings, registry, stopping))
    try:
        yield
    finally:
        stopping.set()
        await task


def _ids(tokenizer: Any, text: str) -> list[int]:
    return PromptEncoder.of(tokenizer).encode(text)


async def test_the_spec_example_over_the_five_llama2_models(
    llama_stack: tuple[httpx.AsyncClient, Any],
) -> None:
    client, tokenizer = llama_stack
    names = ["llama-2-7b-chat", "llama-2-70b", "llama-2-13b-chat", "llama-2-7b", "llama-2-70b-chat"]
    response = await client.post("/v1/completion", json={**SPEC_EXAMPLE, "model": names})
    assert response.status_code == 200, response.text
    choices = response.json()["choices"]
    assert [c["model"] for c in choices] == names
    # Meta's format with exactly one BOS for chat models, the raw prompt with one BOS for base.
    chat = _ids(tokenizer, "<s>[INST] Once upon a time [/INST]")
    base = _ids(tokenizer, "Once upon a time")
    assert chat[:5] == [1, 518, 25580, 29962, 9038] and len(chat) == 12
    assert base == [1, 9038, 2501, 263, 931]
    for choice in choices:
        want = len(chat) if choice["model"].endswith("-chat") else len(base)
        assert choice["usage"]["prompt_tokens"] == want, choice
        assert 1 <= choice["usage"]["completion_tokens"] <= SPEC_EXAMPLE["max_tokens"]
        assert "." not in choice["text"]


@pytest.mark.parametrize(
    ("prompt", "stop", "text"),
    [
        ("Once upon a time", [], " there was a cat . It sat"),
        ("Once upon a time", ["."], " there was a cat "),  # cut inside the piece "▁."
        ("Once upon a time", ["t ."], " there was a ca"),  # a stop across two pieces
        ("My pet", [], " loves 🦙 and hay"),  # byte-fallback tokens decode whole
        ("My pet", ["🦙"], " loves "),  # a stop made of four byte tokens
    ],
)
async def test_stop_strings_cut_sentencepiece_text(
    llama_stack: tuple[httpx.AsyncClient, Any], prompt: str, stop: list[str], text: str
) -> None:
    client, _ = llama_stack
    body = {**SPEC_EXAMPLE, "prompt": prompt, "model": SCRIPTED, "stop": stop}
    response = await client.post("/v1/completion", json=body)
    assert response.status_code == 200, response.text
    (choice,) = response.json()["choices"]
    assert choice["text"] == text
    assert choice["finish_reason"] == "stop"  # a stop sequence, or the script's EOS


async def test_the_4096_token_context_is_enforced(
    llama_stack: tuple[httpx.AsyncClient, Any],
) -> None:
    client, tokenizer = llama_stack
    words = CONTEXT - 1 - 8  # with the BOS and 8 new tokens, exactly the context
    prompt = " ".join(["hello"] * words)
    assert len(_ids(tokenizer, prompt)) + 8 == CONTEXT
    body = {"prompt": prompt, "model": "llama-2-7b", "max_tokens": 8, "temperature": 0}
    fits = await client.post("/v1/completion", json=body)
    assert fits.status_code == 200, fits.text
    assert fits.json()["usage"]["prompt_tokens"] == CONTEXT - 8
    beyond = await client.post("/v1/completion", json={**body, "max_tokens": 9})
    assert beyond.status_code == 400, beyond.text
    assert "4096" in beyond.json()["error"]["message"]


async def test_chat_completions_render_the_system_message_as_sys(
    llama_stack: tuple[httpx.AsyncClient, Any],
) -> None:
    client, tokenizer = llama_stack
    messages = [
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "What colour is the sky?"},
    ]
    body = {"model": "llama-2-13b-chat", "messages": messages, "max_tokens": 4}
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    meta = (
        "<s>[INST] <<SYS>>\nYou answer in one short sentence.\n<</SYS>>\n\n"
        "What colour is the sky? [/INST]"
    )
    assert response.json()["usage"]["prompt_tokens"] == len(_ids(tokenizer, meta))


async def test_a_conversation_the_template_refuses_is_a_400(
    llama_stack: tuple[httpx.AsyncClient, Any],
) -> None:
    client, _ = llama_stack
    messages = [{"role": "assistant", "content": "Hi"}, {"role": "assistant", "content": "Hi"}]
    body = {"model": "llama-2-7b-chat", "messages": messages, "max_tokens": 4}
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    assert "alternate" in response.json()["error"]["message"]
