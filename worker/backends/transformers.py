"""The local backend: Hugging Face Transformers models, continuously batched, CUDA when present.

Tasks go to an inbox; one inference thread runs a ``worker.decode.DecodeBatch`` and, between
decode steps, admits waiting tasks while the row cap (``KC_WORKER_MAX_BATCH``) and the token
budget (``KC_WORKER_TOKEN_BUDGET``) allow, so new tasks join while others generate, and each task's
outcome is handed to the event loop the step its row finishes. The event loop (and with it the
Kafka consumer's heartbeats and polls) never waits for the model. On CUDA the model runs in
bf16 with SDPA (never flash_attention_2: see ``_attention``); on CPU in bf16 with SDPA (B1 in
docs/benchmarks.md measures the batching). ``KC_TORCH_COMPILE`` and ``KC_CUDA_GRAPHS`` choose
how its decode steps run (``worker.forward.step_mode``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from jinja2 import TemplateError

from schemas.limits import context_refusal
from schemas.metrics import WorkerMetrics
from schemas.registry import ModelSpec
from schemas.settings import Settings
from schemas.wire import TaskMessage
from worker.backend import Backend, backend_kind
from worker.decode import DecodeBatch, Finished, Row
from worker.draws import task_seed
from worker.forward import StepMode, step_mode
from worker.prompting import PromptEncoder, conversation, plain_prompt
from worker.stops import cut_at_stop
from worker.task import Completion, Delta, Failure, Outcome, Task
from worker.weights import load_weights

log = logging.getLogger(__name__)

# Prefilling rows one at a time costs a forward pass each; while the batch is busy, waiting
# rows are admitted together once this many decode steps passed since the first of them came
# (see ``should_admit``).
ADMIT_EVERY_STEPS = 4

_CANCELLED_KEPT = 4096
_Event = tuple[Task, Outcome | Delta]


@dataclass(slots=True, eq=False)
class _Waiting:
    task: Task
    events: asyncio.Queue[_Event]  # shared by the tasks of one run() call
    loop: asyncio.AbstractEventLoop
    streamed: int = 0  # characters of text already sent as deltas


class TransformersBackend:
    """A causal LM decoding a continuous batch in one inference thread."""

    def __init__(
        self,
        spec: ModelSpec,
        model: Any,
        tokenizer: Any,
        max_batch: int,
        token_budget: int,
        mode: StepMode | None = None,
    ) -> None:
        self._spec = spec
        self._model = model
        self._tokenizer = tokenizer
        self._encoder = PromptEncoder.of(tokenizer)
        # Generated text is decoded after this token and cut past it: sentencepiece decoders
        # drop the leading space of a text's first piece ("▁there" alone decodes "there"),
        # which would glue a completion to its prompt.
        self._anchor = tokenizer("a", add_special_tokens=False)["input_ids"][-1]
        self._anchor_len = len(self._decode_bare([self._anchor]))
        self._max_batch = max_batch
        checkpoint = int(getattr(model.config, "max_position_embeddings", 2048))
        self._context = min(checkpoint, spec.context_tokens or checkpoint)
        eos = model.generation_config.eos_token_id
        self._eos = frozenset(eos if isinstance(eos, list) else [eos])
        pad = tokenizer.pad_token_id
        self._batch = DecodeBatch(
            model,
            eos=self._eos,
            pad=pad if pad is not None else min(self._eos),
            decode=self._decode,
            max_rows=max_batch,
            token_budget=token_budget,
            mode=mode,
        )
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"kc-infer-{spec.name}")
        self._inbox: queue.SimpleQueue[_Waiting] = queue.SimpleQueue()
        self._closing = threading.Event()
        # Request ids nobody waits for any more; bounded, as a cancel may name a finished task.
        self._cancelled: OrderedDict[str, None] = OrderedDict()
        self._cancel_lock = threading.Lock()
        self._driver: asyncio.Task[None] | None = None

    @classmethod
    async def load(cls, spec: ModelSpec, settings: Settings) -> TransformersBackend:
        """Load the weights (converting a packaged GGUF once) off the event loop."""
        device = _pick_device(settings.device)
        model, tokenizer = await asyncio.to_thread(_load, spec, settings, device)
        log.info("%s loaded on %s", spec.name, device)
        return cls(
            spec,
            model,
            tokenizer,
            settings.worker_max_batch,
            settings.worker_token_budget,
            mode=step_mode(settings.torch_compile, settings.cuda_graphs, device),
        )

    @property
    def capacity(self) -> int:
        """A full batch decoding and as many waiting, to join the step a row finishes."""
        return 2 * self._max_batch

    async def run(self, tasks: Sequence[Task]) -> AsyncIterator[_Event]:
        """Queue the tasks for the inference thread; yield deltas, and each outcome as its
        row finishes."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[_Event] = asyncio.Queue()
        for task in tasks:
            self._inbox.put(_Waiting(task, events, loop))
        if self._driver is None or self._driver.done():
            self._driver = asyncio.create_task(self._drive(), name=f"kc-driver-{self._spec.name}")
        left = len(tasks)
        while left:
            task, event = await events.get()
            if not isinstance(event, Delta):
                left -= 1
            yield task, event

    async def _drive(self) -> None:
        loop = asyncio.get_running_loop()
        # Checked here, on the loop that fills the inbox: a task queued while the thread was
        # returning is seen, so none is ever stranded.
        while not self._inbox.empty() and not self._closing.is_set():
            await loop.run_in_executor(self._thread, self._serve)

    def _serve(self) -> None:
        """Decode until no row runs and none waits (blocking; the inference thread)."""
        waiting: deque[tuple[Row, _Waiting]] = deque()
        since = 0  # decode steps since the oldest waiting row came
        while not self._closing.is_set():
            self._take(waiting)
            self._drop_cancelled(waiting)
            if should_admit(len(waiting), len(self._batch.rows), since):
                joining = self._admissible(waiting)
                self._guarded(functools.partial(self._batch.admit, joining), joining)
                since = 0
            if not self._batch.rows:
                if not waiting and self._inbox.empty():
                    return
                continue
            self._guarded(self._batch.step, ())
            self._stream_deltas()
            since = since + 1 if waiting else 0

    def _take(self, waiting: deque[tuple[Row, _Waiting]]) -> None:
        """Move the inbox into ``waiting``, answering at once the tasks not worth running."""
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            row = self._prepare(item)
            if isinstance(row, Failure):
                _resolve(item, row)
            else:
                waiting.append((row, item))

    def _prepare(self, item: _Waiting) -> Row | Failure:
        """The task's row, or why it is not worth running."""
        message = item.task.message
        try:
            prompt = self._encoder.encode(self._render(message))
        except TemplateError as exc:  # e.g. Llama-2's template wants user/assistant turns
            return Failure("invalid_request", f"{self._spec.name}'s chat template: {exc}")
        refusal = self._refuse(len(prompt), item.task)
        if refusal is not None:
            return refusal
        seed = task_seed(message.request_id, message.choice_index, message.sampling.seed)
        return Row(item, prompt, message.sampling, message.deadline, seed=seed)

    def cancel(self, request_id: str) -> None:
        """Stop the request's rows at the next step (thread-safe); they fail as cancelled."""
        with self._cancel_lock:
            self._cancelled[request_id] = None
            while len(self._cancelled) > _CANCELLED_KEPT:
                self._cancelled.popitem(last=False)

    def _drop_cancelled(self, waiting: deque[tuple[Row, _Waiting]]) -> None:
        with self._cancel_lock:
            if not self._cancelled:
                return
            ids = set(self._cancelled)

        def doomed(row: Row) -> bool:
            return bool(row.handle.task.message.request_id in ids)

        failure = Failure("cancelled", "the caller went away; generation was stopped")
        for row in [r for r, _ in waiting if doomed(r)] + self._batch.remove(doomed):
            _resolve(row.handle, failure)
        kept = [(r, w) for r, w in waiting if not doomed(r)]
        waiting.clear()
        waiting.extend(kept)

    def _admissible(self, waiting: deque[tuple[Row, _Waiting]]) -> list[Row]:
        """The oldest waiting rows that fit the batch now (first come, first served)."""
        joining: list[Row] = []
        while waiting and self._batch.fits([*joining, waiting[0][0]]):
            joining.append(waiting.popleft()[0])
        return joining

    def _guarded(self, work: Callable[[], list[Finished]], joining: Sequence[Row]) -> None:
        """Run a prefill or a step; answer the rows it finished, or fail the batch on error."""
        try:
            finished = work()
        except Exception as exc:  # a torch failure fails this batch, never the worker
            log.exception("generation failed for a batch of %d", len(self._batch.rows))
            failure = Failure("backend_error", f"generation failed: {exc}")
            for row in {id(r): r for r in [*self._batch.clear(), *joining]}.values():
                _resolve(row.handle, failure)
            return
        for done in finished:
            _resolve(done.row.handle, self._outcome(done))

    def _stream_deltas(self) -> None:
        """Send the new, safe text of every streaming row still generating."""
        for row in self._batch.rows:
            waiting: _Waiting = row.handle
            if not waiting.task.message.stream or row.text is None:
                continue
            row.text.update(row.tokens)  # the latest tokens only, not the whole text again
            # A running row holds no whole stop string (it would have finished), but its end
            # may be the start of one: that much stays back.
            hold = max((len(s) - 1 for s in row.sampling.stop), default=0)
            safe = len(row.text.text) - hold
            if safe > waiting.streamed:
                _resolve(waiting, Delta(row.text.text[waiting.streamed : safe]))
                waiting.streamed = safe

    def _render(self, message: TaskMessage) -> str:
        """Chat models see the conversation through their template; base models raw text."""
        if self._spec.chat_template and self._tokenizer.chat_template:
            return str(
                self._tokenizer.apply_chat_template(
                    conversation(message), add_generation_prompt=True, tokenize=False
                )
            )
        return plain_prompt(message)

    def _refuse(self, prompt_tokens: int, task: Task) -> Failure | None:
        """A task not worth running: its deadline passed while it waited, or it cannot fit."""
        deadline = task.message.deadline
        if deadline is not None and time.time() > deadline:
            return Failure("deadline_exceeded", "the deadline passed while the task waited")
        max_tokens = task.message.sampling.max_tokens
        refusal = context_refusal(self._spec.name, self._context, max_tokens, prompt_tokens)
        return None if refusal is None else Failure("invalid_request", refusal.message)

    def _decode(self, tokens: list[int]) -> str:
        """Generated ids as text, a leading space kept (see ``_anchor``)."""
        return self._decode_bare([self._anchor, *tokens])[self._anchor_len :]

    def _decode_bare(self, tokens: list[int]) -> str:
        return str(self._tokenizer.decode(tokens, skip_special_tokens=True))

    def _outcome(self, done: Finished) -> Outcome:
        row = done.row
        elapsed_ms = int((time.perf_counter() - row.started) * 1000)
        if done.reason == "deadline":
            return Failure("deadline_exceeded", f"stopped at the deadline after {elapsed_ms} ms")
        kept = row.tokens[:-1] if done.reason == "eos" else row.tokens
        text, stopped = cut_at_stop(self._decode(kept), row.sampling.stop)
        return Completion(
            text=text,
            finish_reason="length" if done.reason == "length" and not stopped else "stop",
            prompt_tokens=len(row.prompt),
            completion_tokens=len(kept),
            prediction_time_ms=elapsed_ms,
        )

    def throttled_until(self) -> float:
        """A local model is never throttled."""
        return 0.0

    async def aclose(self) -> None:
        """Stop the inference thread after its current step; unanswered tasks are cancelled."""
        self._closing.set()
        if self._driver is not None:
            self._driver.cancel()
        self._thread.shutdown(wait=False, cancel_futures=True)


def should_admit(waiting: int, running: int, steps_waited: int) -> bool:
    """Whether to prefill the waiting rows before the next decode step.

    A prefill pauses every running row for about one step, so a lone late row waits a few
    steps to be admitted with others; but when the waiting rows would at least double the
    batch, each step they wait costs more row-steps than the pause (B1 at 8 closed-loop
    clients: +16% tokens/s against waiting the steps out).
    """
    return waiting > 0 and (waiting >= running or steps_waited >= ADMIT_EVERY_STEPS)


def _resolve(waiting: _Waiting, event: Outcome | Delta) -> None:
    """Hand a task's delta or outcome to its event loop (called from the inference thread)."""
    waiting.loop.call_soon_threadsafe(waiting.events.put_nowait, (waiting.task, event))


def streamable(text: str, stops: Sequence[str]) -> str:
    """The part of a growing text that is safe to stream: never past or into a stop sequence."""
    cut, found = cut_at_stop(text, stops)
    if found:
        return cut
    # The tail might be the start of a stop sequence, or half of a multi-byte character.
    hold = max((len(s) - 1 for s in stops), default=0)
    safe = text[: len(text) - hold] if hold else text
    return safe.rstrip("\ufffd")


def _pick_device(setting: str) -> torch.device:
    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def _attention(device: torch.device) -> str:
    """SDPA on every device: the layout this backend decodes in is left-padded, and
    flash_attention_2 unpads such batches with ``nonzero`` and ``.item()`` in every layer
    (host synchronisations, slower than SDPA with a mask), so it is not chosen even when
    installed."""
    del device  # the same answer on CUDA and CPU, on purpose
    return "sdpa"


def _load(spec: ModelSpec, settings: Settings, device: torch.device) -> tuple[Any, Any]:
    model, tokenizer = load_weights(spec, settings.cache_dir, device, _attention(device))
    model.eval()
    return model, tokenizer


@backend_kind("transformers")
async def _build(spec: ModelSpec, settings: Settings, _metrics: WorkerMetrics | None) -> Backend:
    return await TransformersBackend.load(spec, settings)
