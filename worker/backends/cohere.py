"""The Cohere backend: the official ``cohere`` SDK, v2 chat, async client.

The prompt goes as one user message to ``/v2/chat`` (a chat task's own messages as they
are). The key comes from the variable the registry names (``CO_API_KEY``), the base URL from
the registry entry, else ``CO_API_URL``, else Cohere's own. Cohere's ranges differ from the
spec's, so parameters are mapped:

| spec field | spec range | Cohere field | sent to Cohere |
| --- | --- | --- | --- |
| max_tokens | 1..4096 | max_tokens | as is |
| temperature | 0..1 | temperature | as is (Cohere takes any value from 0) |
| top_p | 0..1 | p | clamped to Cohere's 0.01..0.99 (1.0 becomes 0.99, 0 becomes 0.01) |
| stop | at most 5 strings | stop_sequences | as is (more than 5: 422 at the front end) |
| presence_penalty | -2..2 | presence_penalty | 0..2 halved onto Cohere's 0..1; below 0: 422 |
| frequency_penalty | -2..2 | frequency_penalty | 0..2 halved onto Cohere's 0..1; below 0: 422 |

Halving keeps the order and the ends of the spec's non-negative half (2, the strongest
penalty the spec allows, is Cohere's strongest, 1). Cohere has no negative penalty
(rewarding repetition), so a negative value cannot be mapped: the registry's
``accepted_ranges`` make the front end refuse it with a 422 naming the field, and a task that
arrives anyway (a bulk file) fails here with ``invalid_request``. Stop sequences are enforced
again on the returned text. ``usage`` is Cohere's ``usage.tokens`` (else its billed units).
Finish reasons: ``COMPLETE`` and ``STOP_SEQUENCE`` are ``stop``, ``MAX_TOKENS`` is ``length``,
``TOOL_CALL`` is ``stop``; ``ERROR`` fails the task and ``TIMEOUT`` is retried.
Retries, limits and error messages: ``worker.vendor``; the SDK's own retries are off.
"""

from __future__ import annotations

import time
from typing import Any

import cohere
import httpx
from cohere.core.api_error import ApiError
from cohere.core.parse_error import ParsingError

from schemas.metrics import WorkerMetrics
from schemas.registry import ModelSpec
from schemas.settings import Settings
from schemas.wire import Sampling
from worker.backend import Backend, backend_kind
from worker.prompting import conversation
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

VENDOR = "Cohere"
DEFAULT_BASE_URL = "https://api.cohere.com"
P_RANGE = (0.01, 0.99)
_MESSAGE: dict[str, Any] = {
    "system": cohere.SystemChatMessageV2,
    "user": cohere.UserChatMessageV2,
    "assistant": cohere.AssistantChatMessageV2,
}
_FINISH = {"COMPLETE": "stop", "STOP_SEQUENCE": "stop", "MAX_TOKENS": "length", "TOOL_CALL": "stop"}


class CohereBackend(GatedBackend):
    """Completions from Cohere's v2 chat for one public model."""

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
        self._http = httpx.AsyncClient(timeout=spec.timeout_s)
        # Retries are the gate's (Retry-After, partitions paused on 429), never the SDK's.
        self._client = cohere.AsyncClientV2(
            api_key=key,
            base_url=self._base_url,
            max_retries=0,
            httpx_client=self._http,
            log_warning_experimental_features=False,
        )

    async def aclose(self) -> None:
        """Close the SDK's connections."""
        await self._http.aclose()

    async def _attempt(self, task: Task) -> Completion | Fault:
        msg = task.message
        params = cohere_params(msg.sampling)
        if isinstance(params, str):
            return Fault("invalid_request", f"{self._spec.name}: {params}")
        started = time.perf_counter()
        answer = await self._client.chat(
            model=self._model,
            messages=[_MESSAGE[m["role"]](content=m["content"]) for m in conversation(msg)],
            **params,
        )
        elapsed_ms = int((time.perf_counter() - started) * 1000)
        return self._outcome(answer, msg.sampling, elapsed_ms)

    def _outcome(self, answer: Any, sampling: Sampling, elapsed_ms: int) -> Completion | Fault:
        # The SDK builds answers leniently: a server's missing fields show up only here.
        try:
            items = answer.message.content or []
            text = "".join(str(i.text) for i in items if getattr(i, "type", None) == "text")
            reason = str(answer.finish_reason)
        except (AttributeError, TypeError):
            return malformed(VENDOR, self._spec, "something that is not a v2 chat response")
        name = self._spec.name
        if reason == "ERROR":
            return Fault("backend_error", f"{VENDOR} reported an error generating {name}")
        if reason == "TIMEOUT":
            return Fault("unavailable", f"{VENDOR} timed out generating {name}", True)
        cut, stopped = cut_at_stop(text, sampling.stop)
        prompt_tokens, completion_tokens = _usage(answer)
        return Completion(
            text=cut,
            finish_reason="stop" if stopped else _FINISH.get(reason, "stop"),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            prediction_time_ms=elapsed_ms,
        )

    def _classify(self, exc: Exception) -> Fault:
        if isinstance(exc, ParsingError):
            return malformed(VENDOR, self._spec, "an answer that does not match its schema")
        if isinstance(exc, ApiError):
            status = exc.status_code or 0
            if 200 <= status < 300:  # the SDK's way of saying "a 2xx body that is not JSON"
                return malformed(VENDOR, self._spec, "a body that is not JSON")
            return status_fault(VENDOR, self._spec, status, detail(exc.body), exc.headers)
        if isinstance(exc, httpx.TransportError):  # includes httpx's timeouts
            return unreachable(VENDOR, self._spec, self._base_url, exc)
        return unexpected(VENDOR, self._spec, exc)


def cohere_params(sampling: Sampling) -> dict[str, Any] | str:
    """The SDK arguments for a task's sampling, or why a value cannot be mapped."""
    for field in ("presence_penalty", "frequency_penalty"):
        value = getattr(sampling, field)
        if value < 0:
            return f"{field}: Cohere has no negative penalty; 0 to 2 can be mapped (got {value})"
    params: dict[str, Any] = {
        "max_tokens": sampling.max_tokens,
        "temperature": sampling.temperature,
        "p": min(max(sampling.top_p, P_RANGE[0]), P_RANGE[1]),
        "presence_penalty": sampling.presence_penalty / 2,
        "frequency_penalty": sampling.frequency_penalty / 2,
    }
    if sampling.stop:
        params["stop_sequences"] = list(sampling.stop)
    return params


def _usage(answer: Any) -> tuple[int, int]:
    usage = getattr(answer, "usage", None)
    for counts in (getattr(usage, "tokens", None), getattr(usage, "billed_units", None)):
        if counts is not None and counts.input_tokens is not None:
            return int(counts.input_tokens), int(counts.output_tokens or 0)
    return 0, 0


@backend_kind("cohere")
async def _build(spec: ModelSpec, settings: Settings, metrics: WorkerMetrics | None) -> Backend:
    return CohereBackend(spec, settings, metrics=metrics)
