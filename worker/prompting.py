"""What a model is asked: a plain prompt, or a conversation for chat templates and vendors."""

from __future__ import annotations

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
