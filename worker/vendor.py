"""What the vendor backends (OpenAI, Cohere) share: limits, retries, throttling, clear errors.

``VendorGate`` wraps every call a vendor backend makes:

- at most ``max_concurrency`` calls of one model in flight, each bounded by ``timeout_s``;
- 429, 503, other 5xx, timeouts and lost connections are retried after ``Retry-After``
  (or ``retry-after-ms``) when the vendor sends one, else after an exponential backoff with
  jitter; at most ``max_retries`` retries within ``retry_budget_s`` seconds (all three from
  the registry), and never past the task's deadline;
- while a vendor says 429, ``throttled_until()`` is when its Retry-After ends: the worker loop
  pauses the model's partitions, and calls already taken wait too, so nobody hammers a
  vendor that asked us to hold off;
- every vendor error becomes a ``Failure`` whose message says what went wrong and what to do
  ("OpenAI rejected the API key for gpt-4 (HTTP 401); check OPENAI_API_KEY"); the API key is
  scrubbed from every message the gate logs or returns, whatever a server echoed.

A backend gives the gate ``attempt`` (one vendor call: a ``Completion``, or a ``Fault`` found
in the answer) and ``classify`` (its SDK's exception as a ``Fault``, usually by way of
``status_fault``). Nothing here knows which vendor it is talking to.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from schemas.errors import ConfigError
from schemas.metrics import WorkerMetrics
from schemas.registry import ModelSpec
from schemas.settings import Settings
from schemas.wire import ErrorCode
from worker.task import Completion, Failure, Outcome, Task

log = logging.getLogger(__name__)

_BACKOFF_BASE_S = 0.5
_BACKOFF_CAP_S = 8.0
_DETAIL_CHARS = 300
_REDACTED = "[redacted]"


@dataclass(frozen=True, slots=True)
class Fault:
    """A failed vendor call, translated: the error code, a clear message, whether to retry."""

    code: ErrorCode
    message: str
    retryable: bool = False
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long failed calls are retried."""

    max_retries: int
    budget_s: float
    base_s: float = _BACKOFF_BASE_S
    cap_s: float = _BACKOFF_CAP_S

    @classmethod
    def of(cls, spec: ModelSpec) -> RetryPolicy:
        """The policy the registry gives a model."""
        return cls(max_retries=spec.max_retries, budget_s=spec.retry_budget_s)

    def delay(self, fault: Fault, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based) after ``fault``."""
        if fault.retry_after is not None:
            # A little jitter on top, so the calls held back by one 429 do not all come back
            # in the same millisecond.
            return fault.retry_after + random.uniform(0, 0.1 * fault.retry_after)
        ceiling = min(self.cap_s, self.base_s * 2.0 ** (retry - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


Attempt = Callable[[Task], Awaitable[Completion | Fault]]


class VendorGate:
    """Runs one model's vendor calls within its limits; turns every fault into an outcome."""

    def __init__(
        self,
        spec: ModelSpec,
        vendor: str,
        classify: Callable[[Exception], Fault],
        secret: str,
        policy: RetryPolicy | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self._spec = spec
        self._metrics = metrics
        self._vendor = vendor
        self._classify = classify
        self._secret = secret
        self._policy = policy or RetryPolicy.of(spec)
        self._slots = asyncio.Semaphore(spec.max_concurrency)
        self._throttled_until = 0.0

    def throttled_until(self) -> float:
        """Epoch seconds until which the vendor asked us to send nothing (0: never asked)."""
        return self._throttled_until

    async def run(
        self, tasks: Sequence[Task], attempt: Attempt
    ) -> AsyncIterator[tuple[Task, Outcome]]:
        """Run every task concurrently (within the limit); yield each outcome when known."""
        jobs = [asyncio.create_task(self._settle(task, attempt)) for task in tasks]
        try:
            for next_done in asyncio.as_completed(jobs):
                yield await next_done
        finally:
            for job in jobs:
                job.cancel()

    async def _settle(self, task: Task, attempt: Attempt) -> tuple[Task, Outcome]:
        return task, await self.call(task, attempt)

    async def call(self, task: Task, attempt: Attempt) -> Outcome:
        """One task's outcome: its calls retried within the policy, the deadline and 429s."""
        started = time.time()
        give_up_at = started + self._policy.budget_s
        deadline = task.message.deadline
        if deadline is not None:
            if deadline <= started:
                return Failure("deadline_exceeded", "the deadline passed before work began")
            give_up_at = min(give_up_at, deadline)
        tries = 0
        while True:
            held = await self._hold_off(give_up_at)
            if held is not None:
                return self._fail(held, tries, started)
            result = await self._once(task, attempt)
            if result is None:
                continue
            tries += 1
            if isinstance(result, Completion):
                return result
            delay = self._policy.delay(result, tries)
            if result.code == "rate_limited" and result.retryable:
                self._throttled_until = max(self._throttled_until, time.time() + delay)
            self._count(result)
            if (
                not result.retryable
                or tries > self._policy.max_retries
                or time.time() + delay >= give_up_at
            ):
                return self._fail(result, tries, started)
            log.warning(
                "%s; retry %d of %d in %.2f s",
                self._scrub(result.message),
                tries,
                self._policy.max_retries,
                delay,
            )
            await asyncio.sleep(delay)

    def _count(self, fault: Fault) -> None:
        if self._metrics is None:
            return
        if fault.code == "rate_limited":
            self._metrics.vendor_throttled.labels(self._spec.name).inc()
        if fault.retryable:
            self._metrics.vendor_retries.labels(self._spec.name, fault.code).inc()

    async def _hold_off(self, give_up_at: float) -> Fault | None:
        """Wait out a 429 the vendor gave another call; a Fault when it outlasts our bound."""
        wait = self._throttled_until - time.time()
        if wait <= 0:
            return None
        if time.time() + wait >= give_up_at:
            return Fault(
                "rate_limited",
                f"{self._vendor} asked to hold off {self._spec.name} for {wait:.1f} s more "
                "(HTTP 429), past this task's retry budget or deadline",
            )
        await asyncio.sleep(wait)
        return None

    async def _once(self, task: Task, attempt: Attempt) -> Completion | Fault | None:
        """One call; None when a 429 came while waiting for a slot (hold off first)."""
        async with self._slots:
            if self._throttled_until > time.time():
                return None
            try:
                async with asyncio.timeout(self._spec.timeout_s):
                    return await attempt(task)
            except TimeoutError:
                return Fault(
                    "unavailable",
                    f"{self._vendor} did not answer {self._spec.name} within "
                    f"{self._spec.timeout_s:g} s (timeout_s in the registry)",
                    retryable=True,
                )
            except Exception as exc:  # the vendor boundary: every SDK error becomes a Fault
                return self._classify(exc)

    def _fail(self, fault: Fault, tries: int, started: float) -> Failure:
        message = fault.message
        if fault.retryable or tries > 1:
            attempts = f"{tries} attempt" + ("" if tries == 1 else "s")
            message += f"; gave up after {attempts} in {time.time() - started:.1f} s"
        message = self._scrub(message)
        log.warning("%s", message)
        return Failure(fault.code, message)

    def _scrub(self, text: str) -> str:
        return scrub(text, self._secret)


class GatedBackend(ABC):
    """The ``Backend`` surface every vendor backend shares, all of it through its gate.

    A subclass gives ``_attempt`` (one call), ``_classify`` (its SDK's exceptions as faults)
    and ``aclose``.
    """

    def __init__(
        self,
        spec: ModelSpec,
        vendor: str,
        key: str,
        policy: RetryPolicy | None,
        metrics: WorkerMetrics | None,
    ) -> None:
        self._spec = spec
        self._gate = VendorGate(spec, vendor, self._classify, key, policy, metrics)

    @property
    def capacity(self) -> int:
        """As many tasks in flight as the registry lets this model call at once."""
        return self._spec.max_concurrency

    def throttled_until(self) -> float:
        """Until when the vendor asked us (429) to hold off."""
        return self._gate.throttled_until()

    def run(self, tasks: Sequence[Task]) -> AsyncIterator[tuple[Task, Outcome]]:
        """Call the vendor for every task; yield each outcome as it comes."""
        return self._gate.run(tasks, self._attempt)

    def cancel(self, request_id: str) -> None:  # noqa: B027 (deliberately nothing to do)
        """Vendor calls are short and already paid for once sent; a cancelled task finishes."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close the SDK's connections."""

    @abstractmethod
    async def _attempt(self, task: Task) -> Completion | Fault:
        """One vendor call for ``task``."""

    @abstractmethod
    def _classify(self, exc: Exception) -> Fault:
        """The SDK's exception as a fault."""


def scrub(text: str, secret: str) -> str:
    """The text with the secret replaced, wherever a server echoed it."""
    return text.replace(secret, _REDACTED) if secret else text


def api_key(spec: ModelSpec, settings: Settings) -> str:
    """The model's API key from the settings, or ConfigError naming the variable to set."""
    env = spec.api_key_env
    secret = settings.secret(env) if env else None
    if secret is None or not secret.get_secret_value():
        raise ConfigError(f"{spec.name}: set {env or 'api_key_env in the registry'} to serve it")
    return secret.get_secret_value()


def base_url(spec: ModelSpec, settings: Settings, default: str) -> str:
    """The server to call: the registry entry's, else its kind's variable, else the vendor's."""
    return spec.base_url or settings.vendor_url(spec.base_url_env) or default


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds a response asks us to wait (``retry-after-ms``, ``Retry-After``), or None."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def detail(body: object) -> str:
    """The vendor's own words from an error body, shortened (empty when it said nothing)."""
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        body = body["error"]  # OpenAI's shape: {"error": {"message": ...}}
    said = body.get("message") if isinstance(body, Mapping) else body
    if not isinstance(said, str | bytes) or not said:
        return ""
    text = said.decode(errors="replace") if isinstance(said, bytes) else said
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_CHARS else text[:_DETAIL_CHARS] + "…"


def status_fault(
    vendor: str,
    spec: ModelSpec,
    status: int,
    said: str,
    headers: Mapping[str, str] | None,
) -> Fault:
    """An HTTP error answer of a vendor as a Fault (the vendor's words in ``said``)."""
    name, http = spec.name, f"HTTP {status}"
    told = f": {said}" if said else ""
    if status in (401, 498):
        # Never the vendor's words here: some echo (part of) the rejected key.
        return Fault(
            "unauthorized",
            f"{vendor} rejected the API key for {name} ({http}); check {spec.api_key_env}",
        )
    if status == 403:
        return Fault(
            "unauthorized",
            f"{vendor} refused {name} to this API key ({http}){told}; check the key's access",
        )
    if status == 404:
        return Fault(
            "invalid_request",
            f"{vendor} does not serve the model {spec.vendor_model!r} of {name} ({http}){told}; "
            "check vendor_model and base_url in the registry",
        )
    wait = retry_after(headers)
    if status == 429:
        return Fault("rate_limited", f"{vendor} rate-limited {name} ({http}){told}", True, wait)
    if status in (499, 502, 503, 504):
        return Fault(
            "unavailable", f"{vendor} is unavailable for {name} ({http}){told}", True, wait
        )
    if status >= 500 or status in (408, 409):
        return Fault("backend_error", f"{vendor} failed on {name} ({http}){told}", True, wait)
    return Fault("invalid_request", f"{vendor} refused the request for {name} ({http}){told}")


def unreachable(vendor: str, spec: ModelSpec, url: str, exc: Exception) -> Fault:
    """A call that got no answer at all (connection refused, reset, read timeout)."""
    return Fault(
        "unavailable",
        f"cannot reach {vendor} at {url} for {spec.name} ({type(exc).__name__})",
        retryable=True,
    )


def malformed(vendor: str, spec: ModelSpec, what: str) -> Fault:
    """An answer that is not what the vendor's API reference says it sends."""
    return Fault(
        "backend_error",
        f"{vendor} answered {spec.name} with {what}; check base_url points at a real "
        f"{vendor} endpoint",
    )


def unexpected(vendor: str, spec: ModelSpec, exc: Exception) -> Fault:
    """An exception no rule above knows; logged with its type, failed without retry."""
    log.warning("%s: unexpected %s from the %s SDK", spec.name, type(exc).__name__, vendor)
    return Fault("backend_error", f"{vendor} call for {spec.name} failed ({type(exc).__name__})")
