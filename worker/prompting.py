"""What a model is asked: a plain prompt, or a conversation for chat templates and vendors,
and the ids a local model is fed for it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas.wire import TaskMessage


def conversation(message: TaskMessage) -> list[dict[str, str]]:
    """The task as chat messages: its own, or the prompt as one user message."""
    if message.messages:
        # "developer" is OpenAI's newer name for the system role; templates know "system".
        return [
            {"role": "system" if m.role == "developer" else m.role, "content": m.content}
            for m in message.messages
        ]
    return [{"role": "user", "content": message.prompt}]


def plain_prompt(message: TaskMessage) -> str:
    """The task as raw text, for base models without a chat template."""
    if not message.messages:
        return message.prompt
    lines = [f"{m['role']}: {m['content']}" for m in conversation(message)]
    return "\n".join([*lines, "assistant:"])


@dataclass(frozen=True, slots=True)
class PromptEncoder:
    """Text to the ids a local model is fed, with one BOS at the start at most.

    A chat template may already begin with the BOS (Llama-2's renders ``<s>[INST]``), and a
    tokenizer may add one itself (Llama-2's does, SmolLM2's does not): encoding the rendered
    text with special tokens on fed Llama-2-chat ``[1, 1, 518, ...]``, a malformed prompt,
    and counted a token too many. So the text is encoded bare, and the BOS the tokenizer would
    have added is put in front only when the text does not already start with it.
    """

    tokenizer: Any
    bos: int | None  # the BOS this tokenizer adds to a text, None when it adds none

    @classmethod
    def of(cls, tokenizer: Any) -> PromptEncoder:
        """The encoder of a tokenizer, learning from a probe whether it adds a BOS."""
        bos = tokenizer.bos_token_id
        with_special = tokenizer("a")["input_ids"]
        bare = tokenizer("a", add_special_tokens=False)["input_ids"]
        adds = bos is not None and with_special[:1] == [bos] and bare[:1] != [bos]
        return cls(tokenizer, bos if adds else None)

    def encode(self, text: str) -> list[int]:
        """The ids of ``text`` as the model should see them."""
        ids = [int(i) for i in self.tokenizer(text, add_special_tokens=False)["input_ids"]]
        if self.bos is not None and ids[:1] != [self.bos]:
            ids.insert(0, self.bos)
        return ids
