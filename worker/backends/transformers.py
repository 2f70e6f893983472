"""The local backend: Hugging Face Transformers models, batched, on CUDA when present.

Tasks wait in a queue; one driver takes whatever is waiting (up to ``KC_WORKER_MAX_BATCH``)
and runs one ``generate`` call for the lot in a single inference thread, so the event loop
(and with it the Kafka consumer's heartbeats and polls) never waits for the model. Per-row
temperature, top_p, penalties, stop strings and max_tokens come from ``worker.sampling``.
On CUDA the model runs in bf16 with SDPA attention; on CPU in bf16 too (two-core measurements
in DESIGN.md), with every core given to torch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from schemas.registry import ModelSpec
from schemas.settings import Settings
from worker.sampling import RowSampler, RowStopper
from worker.stops import cut_at_stop
from worker.task import Completion, Failure, Outcome, Task
from worker.weights import checkpoint_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Waiting:
    task: Task
    future: asyncio.Future[tuple[Task, Outcome]]


class TransformersBackend:
    """A causal LM served in batches from one inference thread."""

    def __init__(self, spec: ModelSpec, model: Any, tokenizer: Any, max_batch: int) -> None:
        self._spec = spec
        self._model = model
        self._tokenizer = tokenizer
        self._max_batch = max_batch
        self._device = next(model.parameters()).device
        self._context = int(getattr(model.config, "max_position_embeddings", 2048))
        eos = model.generation_config.eos_token_id
        self._eos = set(eos if isinstance(eos, list) else [eos])
        self._pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self._eos)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"kc-infer-{spec.name}")
        self._waiting: asyncio.Queue[_Waiting] = asyncio.Queue()
        self._driver: asyncio.Task[None] | None = None

    @classmethod
    async def load(cls, spec: ModelSpec, settings: Settings) -> TransformersBackend:
        """Load the weights (converting a packaged GGUF once) off the event loop."""
        device = _pick_device(settings.device)
        model, tokenizer = await asyncio.to_thread(_load, spec, settings, device)
        log.info("%s loaded on %s", spec.name, device)
        return cls(spec, model, tokenizer, settings.worker_max_batch)

    @property
    def capacity(self) -> int:
        """One batch generating and one waiting, so the next batch is ready when a GPU frees."""
        return 2 * self._max_batch

    async def run(self, tasks: Sequence[Task]) -> AsyncIterator[tuple[Task, Outcome]]:
        """Queue the tasks for the driver; yield each outcome when its batch ends."""
        loop = asyncio.get_running_loop()
        futures = []
        for task in tasks:
            future: asyncio.Future[tuple[Task, Outcome]] = loop.create_future()
            self._waiting.put_nowait(_Waiting(task, future))
            futures.append(future)
        if self._driver is None or self._driver.done():
            self._driver = asyncio.create_task(self._drive(), name=f"kc-driver-{self._spec.name}")
        for next_done in asyncio.as_completed(futures):
            yield await next_done

    async def _drive(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._waiting.empty():
            batch = [self._waiting.get_nowait()]
            while len(batch) < self._max_batch and not self._waiting.empty():
                batch.append(self._waiting.get_nowait())
            try:
                outcomes = await loop.run_in_executor(
                    self._thread, self.generate, [w.task for w in batch]
                )
            except Exception as exc:  # a torch failure fails this batch, never the worker
                log.exception("generation failed for a batch of %d", len(batch))
                outcomes = [Failure("backend_error", f"generation failed: {exc}")] * len(batch)
            for waiting, outcome in zip(batch, outcomes, strict=True):
                if not waiting.future.done():
                    waiting.future.set_result((waiting.task, outcome))

    def generate(self, tasks: Sequence[Task]) -> list[Outcome]:
        """Run one batch to completion (blocking; called in the inference thread)."""
        prompts = [self._render(t.message.prompt) for t in tasks]
        encoded = self._tokenizer(prompts, return_tensors="pt", padding=True).to(self._device)
        lengths = encoded["attention_mask"].sum(dim=1).tolist()
        outcomes: list[Outcome | None] = [
            self._refuse(n, t) for n, t in zip(lengths, tasks, strict=True)
        ]
        runnable = [i for i, o in enumerate(outcomes) if o is None]
        if runnable:
            started = time.perf_counter()
            rows = self._generate_rows(encoded, [tasks[i] for i in runnable], runnable)
            elapsed_ms = int((time.perf_counter() - started) * 1000)
            for i, tokens in zip(runnable, rows, strict=True):
                outcomes[i] = self._finish(tasks[i], tokens, lengths[i], elapsed_ms)
        return [o for o in outcomes if o is not None]

    def _render(self, prompt: str) -> str:
        if self._spec.chat_template and self._tokenizer.chat_template:
            return str(
                self._tokenizer.apply_chat_template(
                    [{"role": "user", "content": prompt}],
                    add_generation_prompt=True,
                    tokenize=False,
                )
            )
        return prompt

    def _refuse(self, prompt_tokens: int, task: Task) -> Failure | None:
        """A task not worth running: its deadline passed while it waited, or it cannot fit."""
        deadline = task.message.deadline
        if deadline is not None and time.time() > deadline:
            return Failure("deadline_exceeded", "the deadline passed while the task waited")
        max_tokens = task.message.sampling.max_tokens
        if prompt_tokens + max_tokens <= self._context:
            return None
        return Failure(
            "invalid_request",
            f"prompt is {prompt_tokens} tokens and max_tokens is {max_tokens}, but "
            f"{self._spec.name} holds {self._context} tokens in all; shorten one of them",
        )

    def _generate_rows(self, encoded: Any, tasks: list[Task], rows: list[int]) -> list[list[int]]:
        input_ids = encoded["input_ids"][rows]
        attention = encoded["attention_mask"][rows]
        sampling = [t.message.sampling for t in tasks]
        prompt_len = input_ids.shape[1]
        with torch.inference_mode():
            out = self._model.generate(
                input_ids=input_ids,
                attention_mask=attention,
                max_new_tokens=max(s.max_tokens for s in sampling),
                do_sample=any(s.temperature > 0 for s in sampling),
                temperature=1.0,
                top_p=1.0,
                top_k=None,
                pad_token_id=self._pad,
                logits_processor=[RowSampler(sampling, prompt_len, self._device)],
                stopping_criteria=[
                    RowStopper(
                        sampling, prompt_len, self._decode, [t.message.deadline for t in tasks]
                    )
                ],
            )
        return [row[prompt_len:].tolist() for row in out]

    def _decode(self, tokens: list[int]) -> str:
        return str(self._tokenizer.decode(tokens, skip_special_tokens=True))

    def _finish(
        self, task: Task, tokens: list[int], prompt_tokens: int, elapsed_ms: int
    ) -> Outcome:
        sampling = task.message.sampling
        deadline = task.message.deadline
        if deadline is not None and time.time() > deadline:
            return Failure("deadline_exceeded", f"stopped at the deadline after {elapsed_ms} ms")
        end = next((i for i, t in enumerate(tokens) if t in self._eos), len(tokens))
        kept = tokens[: min(end, sampling.max_tokens)]
        text, stopped = cut_at_stop(self._decode(kept), sampling.stop)
        natural_end = end < sampling.max_tokens
        return Completion(
            text=text,
            finish_reason="stop" if stopped or natural_end else "length",
            prompt_tokens=prompt_tokens,
            completion_tokens=len(kept),
            prediction_time_ms=elapsed_ms,
        )

    def throttled_until(self) -> float:
        """A local model is never throttled."""
        return 0.0

    async def aclose(self) -> None:
        """Stop the driver and the inference thread."""
        if self._driver is not None:
            self._driver.cancel()
        self._thread.shutdown(wait=False, cancel_futures=True)


def _pick_device(setting: str) -> torch.device:
    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def _load(spec: ModelSpec, settings: Settings, device: torch.device) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = checkpoint_dir(spec, settings.cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    model: Any = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.bfloat16, attn_implementation="sdpa"
    )
    model = model.to(device)
    model.eval()
    return model, tokenizer
