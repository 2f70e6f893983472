"""The OpenAI backend: the official ``openai`` SDK (async client), or any compatible server.

Chat models (``api = "chat"``) go to chat completions with the prompt as one user message
(a chat task's own messages as they are); ``api = "completions"`` models (``text-davinci-001``)
go to the legacy completions endpoint with the prompt (a chat task as plain text).
The key comes from the variable the registry names (``OPENAI_API_KEY``), the base URL from
the registry entry, else ``OPENAI_BASE_URL``, else OpenAI's own.

Parameters map one to one (the spec's ranges are within OpenAI's): ``max_tokens``,
``temperature``, ``top_p``, ``stop`` (sent only when given), ``presence_penalty``,
``frequency_penalty``; one choice per task (``n = 1``). Stop sequences are enforced again on
the returned text, because some compatible servers ignore them or keep the stop string.
``usage`` is the vendor's (the billed tokens, even when a stop cut the text here; a server
that reports none gives 0). Finish reasons: ``stop`` and ``length`` as they are,
``content_filter`` kept, tool and function calls read as ``stop``; a stop cut here is ``stop``.
Retries, limits and error messages: ``worker.vendor``; the SDK's own retries are off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, cast

import openai
from openai.types import Completion as TextCompletion
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

from schemas.metrics import WorkerMetrics
from schemas.registry import ModelSpec
from schemas.settings import Settings
from schemas.wire import Sampling
from worker.backend import Backend, backend_kind
from worker.prompting import conversation, plain_prompt
from worker.stops import cut_at_stop
from worker.task import Completion, Task
from worker.vendor import (
    Fault,
    GatedBackend,
    RetryPolicy,
    api_key,
    base_url,
    detail,
    malformed,
    status_fault,
    unexpected,
    unreachable,
)

log = logging.getLogger(__name__)
VENDOR = "OpenAI"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
_FINISH = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "stop",
    "function_call": "stop",
}


class OpenAIBackend(GatedBackend):
    """Completions from OpenAI's API (or a compatible server) for one public model."""

    def __init__(
        self,
        spec: ModelSpec,
        settings: Settings,
        policy: RetryPolicy | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        key = api_key(spec, settings)
        super().__init__(spec, VENDOR, key, policy, metrics)
        self._model = spec.vendor_model or spec.name
        self._base_url = base_url(spec, settings, DEFAULT_BASE_URL)
        # Retries are the gate's (Retry-After, partitions paused on 429), never the SDK's.
        self._client = openai.AsyncOpenAI(
            api_key=key, base_url=self._base_url, max_retries=0, timeout=spec.timeout_s
        )
        self._served: str | None = None
        self._lookup = asyncio.Lock()

    async def aclose(self) -> None:
        """Close the SDK's connections."""
        await self._client.close()

    async def _model_id(self) -> str:
        """The model id to send: ours, unless a one-model compatible server serves another.

        An OpenAI-compatible server started for one model (``transformers serve CKPT``, vLLM,
        ...) refuses every other name. Asked once: when its ``/v1/models`` lists exactly one
        model and not ours, every OpenAI model of this worker is served by that one.
        """
        async with self._lookup:
            if self._served is None:
                self._served = self._model
                if self._base_url != DEFAULT_BASE_URL:
                    self._served = await self._only_served_model() or self._model
            return self._served

    async def _only_served_model(self) -> str | None:
        try:
            ids = [m.id async for m in self._client.models.list()]
        except (openai.APIError, ValueError) as exc:
            log.info(
                "%s does not list its models (%r); sending %s", self._base_url, exc, self._model
            )
            return None
        if self._model in ids or len(ids) != 1:
            return None
        log.warning("%s serves only %s: %s goes to it", self._base_url, ids[0], self._spec.name)
        return ids[0]

    async def _attempt(self, task: Task) -> Completion | Fault:
        msg = task.message
        params = openai_params(msg.sampling)
        model = await self._model_id()
        started = time.perf_counter()
        if self._spec.api == "completions":
            text_answer = await self._client.completions.create(
                model=model, prompt=plain_prompt(msg), **params
            )
            elapsed_ms = int((time.perf_counter() - started) * 1000)
            return self._text_outcome(text_answer, msg.sampling, elapsed_ms)
        messages = cast("list[ChatCompletionMessageParam]", conversation(msg))
        chat_answer = await self._client.chat.completions.create(
            model=model, messages=messages, **params
        )
        elapsed_ms = int((time.perf_counter() - started) * 1000)
        return self._chat_outcome(chat_answer, msg.sampling, elapsed_ms)

    def _chat_outcome(
        self, answer: ChatCompletion, sampling: Sampling, elapsed_ms: int
    ) -> Completion | Fault:
        # The SDK builds answers leniently: a server's missing fields show up only here.
        try:
            choice = answer.choices[0]
            text, reason = choice.message.content or "", choice.finish_reason
        except (AttributeError, IndexError, TypeError):
            return malformed(VENDOR, self._spec, "something that is not a chat completion")
        return _completion(answer, text, reason, sampling, elapsed_ms)

    def _text_outcome(
        self, answer: TextCompletion, sampling: Sampling, elapsed_ms: int
    ) -> Completion | Fault:
        try:
            choice = answer.choices[0]
            text, reason = choice.text or "", choice.finish_reason
        except (AttributeError, IndexError, TypeError):
            return malformed(VENDOR, self._spec, "something that is not a text completion")
        return _completion(answer, text, reason, sampling, elapsed_ms)

    def _classify(self, exc: Exception) -> Fault:
        if isinstance(exc, openai.APIResponseValidationError):
            return malformed(VENDOR, self._spec, "an answer that does not match its schema")
        if isinstance(exc, openai.APIStatusError):
            body = exc.body
            if exc.status_code == 429 and getattr(exc, "code", None) == "insufficient_quota":
                return Fault(
                    "rate_limited",
                    f"{VENDOR} says the quota of the account is used up for {self._spec.name} "
                    "(HTTP 429, insufficient_quota); check the account's billing",
                )
            return status_fault(
                VENDOR, self._spec, exc.status_code, detail(body), exc.response.headers
            )
        if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
            return unreachable(VENDOR, self._spec, self._base_url, exc)
        if isinstance(exc, ValueError):  # json.JSONDecodeError: a 2xx body that is not JSON
            return malformed(VENDOR, self._spec, "a body that is not JSON")
        return unexpected(VENDOR, self._spec, exc)


def openai_params(sampling: Sampling) -> dict[str, Any]:
    """The SDK arguments for a task's sampling (the spec's ranges are OpenAI's)."""
    params: dict[str, Any] = {
        "max_tokens": sampling.max_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "presence_penalty": sampling.presence_penalty,
        "frequency_penalty": sampling.frequency_penalty,
        "n": 1,
    }
    if sampling.stop:
        params["stop"] = list(sampling.stop)
    return params


def _completion(
    answer: ChatCompletion | TextCompletion,
    text: str,
    reason: str | None,
    sampling: Sampling,
    elapsed_ms: int,
) -> Completion:
    cut, stopped = cut_at_stop(text, sampling.stop)
    usage = getattr(answer, "usage", None)
    return Completion(
        text=cut,
        finish_reason="stop" if stopped else _FINISH.get(reason or "stop", "stop"),
        prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        prediction_time_ms=elapsed_ms,
    )


@backend_kind("openai")
async def _build(spec: ModelSpec, settings: Settings, metrics: WorkerMetrics | None) -> Backend:
    return OpenAIBackend(spec, settings, metrics=metrics)
