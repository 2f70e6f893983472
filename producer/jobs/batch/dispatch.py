"""The dispatcher: hands the lines of running batches to the bulk lanes, metered and fairly.

Creating a batch publishes nothing; it writes the batch record. One front end at a time
dispatches: the member of the dispatch consumer group that owns the dispatch topic's one
partition (another takes the partition over when it leaves or dies). Each turn (every 50 ms):

- **Metered.** Per model, a window of bulk tasks in flight (handed out, not yet answered):
  the tasks the workers answered per second over the last 2 s, times the model time a task
  took plus ``KC_BULK_QUEUE_S`` (Little's law). A big batch so keeps every worker busy, and
  the queue in front of the workers stays about ``KC_BULK_QUEUE_S`` long: what a newcomer
  waits behind.
- **Fair.** Each place a window frees goes to the API key with the fewest lines in flight
  (ties in turn), a line at a time: a newcomer's lines go out first until it holds as many
  places as the others. Within one key, its batches oldest first (a team orders its own work).
- **Exactly once.** A turn's tasks and the cursors of their batches (how many lines each has
  handed out) go in one Kafka transaction under one transactional id shared by every front
  end: a dispatcher that takes over fences the one before and continues from the committed
  cursors. A line is handed out once, and its results are counted once each (``LineFold``).
- **Nothing left hanging.** Lines of a cancelled batch, or of a batch past its window, that
  were never handed out are answered here (``cancelled``, ``deadline_exceeded``) in the same
  transactions; a line that no longer checks (its model gone since the upload) is answered
  with the reason. Every custom_id thus ends in the output or the error file.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from producer.election import Election
from producer.jobs.batch.book import BatchBook
from producer.jobs.batch.lines import BatchLine, numbered_lines, parse_line
from producer.jobs.batch.output import DISPATCHER
from producer.jobs.batch.reader import scan
from producer.jobs.batch.store import read_chunks
from producer.jobs.jobfile import BadLine, request_id
from schemas import clients, tracing
from schemas.batch import BatchRecord, DispatchCursor
from schemas.metrics import FrontendMetrics
from schemas.registry import Registry
from schemas.settings import Settings
from schemas.topics import Topics
from schemas.wire import ResultMessage, TaskError, TaskMessage, encode

log = logging.getLogger(__name__)
_TICK_S = 0.05
_MOST_PER_TURN = 2000  # records in one transaction
_HORIZON_S = 2.0  # the answers a window's rate is measured over
_RATE_FLOOR_S = 0.5
_RUNNING = ("in_progress", "cancelling")
KEY_LABELS = 20  # per-key gauges: the keys with most lines waiting, the rest as "other"


@dataclass(slots=True)
class Window:
    """One model's window of bulk tasks in flight, by Little's law: what the workers answer
    per second times (the time a task takes + ``KC_BULK_QUEUE_S``), from the last answers."""

    size: float
    answers: deque[tuple[float, int, int]] = field(default_factory=deque)  # when, tasks, ms
    since: float | None = None  # when answers of this model were first counted

    def update(self, now: float, answered: int, work_ms: int, settings: Settings) -> None:
        """Count the tasks answered since the last turn and their model time; resize."""
        if answered > 0:
            self.answers.append((now, answered, work_ms))
            self.since = now if self.since is None else self.since
        while self.answers and self.answers[0][0] < now - _HORIZON_S:
            self.answers.popleft()
        tasks = sum(n for _, n, _ in self.answers)
        if not tasks or self.since is None:
            return  # nothing answered lately: keep the size the last answers gave
        # A floor on the span: a batching model answers in bursts, and one burst over one
        # turn is not its rate.
        span = min(_HORIZON_S, max(_RATE_FLOOR_S, now - self.since))
        rate = tasks / span
        service = sum(ms for _, _, ms in self.answers) / tasks / 1000
        wanted = rate * (service + settings.bulk_queue_s)
        self.size = min(float(settings.bulk_window_max), max(settings.bulk_window_min, wanted))


@dataclass(slots=True)
class Turn:
    """What one turn hands out: tasks and answers to publish, and the cursors they move."""

    tasks: list[tuple[str, TaskMessage, tracing.Headers | None]] = field(default_factory=list)
    answers: list[tuple[str, ResultMessage]] = field(default_factory=list)
    cursors: dict[str, DispatchCursor] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Records to publish."""
        return len(self.tasks) + len(self.answers)


class Dispatcher:
    """The dispatch loop of one front end: idle unless it owns the dispatch partition."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        book: BatchBook,
        metrics: FrontendMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._book = book
        self._metrics = metrics
        self._topics = Topics(settings.topic_prefix)
        topics = self._topics
        self._election = Election(
            settings, "kc-dispatch", topics.dispatch_group, topics.dispatch, self, _TICK_S, _TICK_S
        )
        self._producer: AIOKafkaProducer | None = None
        self._cursors: dict[str, DispatchCursor] = {}
        self._sources: dict[str, list[tuple[int, bytes]]] = {}
        self._windows: dict[str, Window] = {}
        self._seen: dict[str, dict[str, tuple[int, int]]] = {}
        self._turns = itertools.count()

    @property
    def leading(self) -> bool:
        """Whether this front end dispatches now."""
        return self._election.leading

    @property
    def holding(self) -> bool:
        """Whether it holds the leader's producer (it took over and has not stepped down)."""
        return self._producer is not None

    async def start(self) -> None:
        """Join the dispatch group and start the loop."""
        await self._election.start()

    async def stop(self) -> None:
        """Leave the group (another front end takes over) and stop."""
        await self._election.stop()

    async def take_over(self) -> None:
        """Fence the last dispatcher, then read the cursors it committed."""
        producer = clients.transactional_producer(
            self._settings, "kc-dispatcher", self._topics.dispatcher_transaction, linger_ms=5
        )
        try:
            await producer.start()  # init_transactions: the last one's open transaction aborts
            self._cursors = await _read_cursors(self._settings, self._topics.dispatch)
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer
        self._windows.clear()
        self._seen.clear()
        log.info("dispatch: this front end dispatches (%d batch cursors)", len(self._cursors))

    async def step_down(self) -> None:
        producer, self._producer = self._producer, None
        self._sources.clear()
        if producer is not None:
            with contextlib.suppress(KafkaError):
                await producer.stop()
        if self._metrics is not None:
            self._metrics.bulk_waiting.clear()
            self._metrics.bulk_in_flight.clear()
            self._metrics.bulk_window.clear()

    # One turn

    async def turn(self) -> None:
        running = [b for b in self._book.batches.values() if b.status in _RUNNING and b.metered]
        self._update_windows(running)
        cursors = {b.id: self._cursors.get(b.id) or DispatchCursor(batch_id=b.id) for b in running}
        waiting = [b for b in running if cursors[b.id].next_line < b.total]
        for batch in waiting:
            if batch.id not in self._sources:
                self._sources[batch.id] = await self._source(batch)
        turn = self._plan(running, waiting, cursors, self._in_flight(running, cursors))
        self._show(running, cursors, turn)
        if turn.size:
            await self._commit(turn)
            self._cursors.update(turn.cursors)
        for batch_id in [b for b in self._sources if b not in {w.id for w in waiting}]:
            del self._sources[batch_id]  # every line handed out: its text is not needed

    def _update_windows(self, running: list[BatchRecord]) -> None:
        answered: Counter[str] = Counter()
        work: Counter[str] = Counter()
        seen: dict[str, dict[str, tuple[int, int]]] = {}
        for batch in running:
            fold = self._book.fold(batch.id)
            if fold is None:
                continue
            before = self._seen.get(batch.id, {})
            seen[batch.id] = {m: (n, fold.work_ms.get(m, 0)) for m, n in fold.tasks.items()}
            for model, (n, ms) in seen[batch.id].items():
                n0, ms0 = before.get(model, (0, 0))
                answered[model] += n - n0
                work[model] += ms - ms0
        self._seen = seen
        now = time.monotonic()
        for model, window in self._windows.items():
            window.update(now, answered[model], work[model], self._settings)
        for model in answered.keys() - self._windows.keys():
            self._window(model).update(now, answered[model], work[model], self._settings)

    def _window(self, model: str) -> Window:
        return self._windows.setdefault(model, Window(float(self._settings.bulk_window_min)))

    def _in_flight(
        self, running: list[BatchRecord], cursors: dict[str, DispatchCursor]
    ) -> Counter[str]:
        flying: Counter[str] = Counter()
        for batch in running:
            fold = self._book.fold(batch.id)
            for model, sent in cursors[batch.id].tasks.items():
                flying[model] += max(0, sent - (fold.tasks.get(model, 0) if fold else sent))
        return flying

    def _plan(
        self,
        running: list[BatchRecord],
        waiting: list[BatchRecord],
        cursors: dict[str, DispatchCursor],
        flying: Counter[str],
    ) -> Turn:
        """Fill the windows a line at a time, each to the key with the fewest lines in flight."""
        turn = Turn()
        budget: dict[str, int] = {}
        load: Counter[str] = Counter()
        for held in running:
            load[held.key_id] += self._lines_in_flight(held, cursors[held.id])
        queues = _by_key(waiting)
        keys = sorted(queues)
        start = next(self._turns) % len(keys) if keys else 0
        rank = {key: i for i, key in enumerate(keys[start:] + keys[:start])}  # ties in turn
        open_keys = set(keys)
        now = time.time()
        while open_keys and turn.size < _MOST_PER_TURN:
            key = min(open_keys, key=lambda k: (load[k], rank[k]))
            head = _first_waiting(queues[key], cursors)
            if head is None or not self._take_line(head, cursors, budget, flying, turn, now):
                open_keys.discard(key)
                continue
            load[key] += 1
        return turn

    def _take_line(
        self,
        batch: BatchRecord,
        cursors: dict[str, DispatchCursor],
        budget: dict[str, int],
        flying: Counter[str],
        turn: Turn,
        now: float,
    ) -> bool:
        """Hand out (or answer) the next line of ``batch``; False when its window is full."""
        cursor = turn.cursors.get(batch.id) or cursors[batch.id]
        number, raw = self._sources[batch.id][cursor.next_line]
        results = self._topics.batch_results(batch.id)
        if batch.status == "cancelling" or now > batch.expires_at:
            reason = "cancelled" if batch.status == "cancelling" else "deadline_exceeded"
            turn.answers.append((results, _answer(batch, number, raw, reason)))
        else:
            try:
                line = parse_line(number, raw, self._registry, self._settings, batch.endpoint)
            except BadLine as exc:
                answer = _answer(batch, number, raw, "invalid_request", str(exc))
                turn.answers.append((results, answer))
            else:
                tasks = line_tasks(batch, line, results, now)
                need = Counter(t.model for t in tasks)
                if any(not self._fits(budget, flying, m, n) for m, n in need.items()):
                    return False
                budget.update({m: budget[m] - n for m, n in need.items()})
                topic = self._topics.bulk(tasks[0].model)
                headers = _line_headers(batch, tasks[0], topic) if self._settings.tracing else None
                turn.tasks.extend((self._topics.bulk(t.model), t, headers) for t in tasks)
                sent = Counter(cursor.tasks) + need
                cursor = cursor.model_copy(update={"tasks": dict(sent)})
        turn.cursors[batch.id] = cursor.model_copy(update={"next_line": cursor.next_line + 1})
        cursors[batch.id] = turn.cursors[batch.id]
        return True

    def _fits(self, budget: dict[str, int], flying: Counter[str], model: str, tasks: int) -> bool:
        """Whether ``tasks`` more of the model fit its window this turn (a line larger than
        the whole window goes alone, once the window is empty)."""
        size = int(self._window(model).size)
        if model not in budget:
            budget[model] = size - flying[model]
        return budget[model] >= tasks or budget[model] >= size

    async def _commit(self, turn: Turn) -> None:
        producer = self._producer
        assert producer is not None
        async with producer.transaction():
            sends = [
                await producer.send(topic, encode(t), t.request_id.encode(), headers=headers)
                for topic, t, headers in turn.tasks
            ]
            sends += [
                await producer.send(topic, encode(r), r.request_id.encode())
                for topic, r in turn.answers
            ]
            sends += [
                await producer.send(self._topics.dispatch, encode(c), c.batch_id.encode())
                for c in turn.cursors.values()
            ]
            await clients.delivered(sends)

    async def _source(self, batch: BatchRecord) -> list[tuple[int, bytes]]:
        """A batch's input lines (the file stays while lines of it wait: delete refuses)."""
        record = self._book.files.get(batch.input_file_id)
        if record is None:
            log.error("dispatch: the input file of %s is gone; its lines fail", batch.id)
            return [(n, b"") for n in range(1, batch.total + 1)]
        return numbered_lines(b"".join(await read_chunks(self._settings, record.chunks)))

    def _lines_in_flight(self, batch: BatchRecord, cursor: DispatchCursor) -> int:
        """Lines of a batch handed out and not yet answered."""
        return max(0, cursor.next_line - self._book.outcomes(batch))

    def _show(
        self, running: list[BatchRecord], cursors: dict[str, DispatchCursor], turn: Turn
    ) -> None:
        if self._metrics is None:
            return
        waiting: Counter[str] = Counter()
        flying: Counter[str] = Counter()
        for batch in running:
            cursor = turn.cursors.get(batch.id) or cursors[batch.id]
            waiting[batch.key_id] += batch.total - cursor.next_line
            flying[batch.key_id] += self._lines_in_flight(batch, cursor)
        self._metrics.bulk_waiting.clear()
        self._metrics.bulk_in_flight.clear()
        for gauge, counts in (
            (self._metrics.bulk_waiting, waiting),
            (self._metrics.bulk_in_flight, flying),
        ):
            for key, n in _bounded(counts, waiting).items():
                gauge.labels(key).set(n)
        for model, window in self._windows.items():
            self._metrics.bulk_window.labels(model).set(int(window.size))


async def _read_cursors(settings: Settings, topic: str) -> dict[str, DispatchCursor]:
    """Every committed cursor (read after the fencing: the last dispatcher's are final)."""
    cursors: dict[str, DispatchCursor] = {}
    async for records in scan(settings, [topic]):
        for record in records:
            if record.value is not None:
                cursor = DispatchCursor.model_validate_json(record.value)
                cursors[cursor.batch_id] = cursor
    return cursors


def _by_key(batches: list[BatchRecord]) -> dict[str, list[BatchRecord]]:
    """Each key's batches, oldest first: ``created_at`` is in whole seconds, and a stable sort
    keeps the book's order (the batches topic's, which is the order of creation) within one."""
    queues: dict[str, list[BatchRecord]] = {}
    for batch in sorted(batches, key=lambda b: b.created_at):
        queues.setdefault(batch.key_id, []).append(batch)
    return queues


def _first_waiting(
    batches: list[BatchRecord], cursors: dict[str, DispatchCursor]
) -> BatchRecord | None:
    return next((b for b in batches if cursors[b.id].next_line < b.total), None)


def _bounded(counts: Counter[str], by: Counter[str]) -> dict[str, int]:
    """At most KEY_LABELS keys (those with most waiting), the rest summed as ``other``, which
    is always there: a dispatcher with nothing to do shows 0, not no data."""
    top = {k for k, _ in by.most_common(KEY_LABELS)}
    shown = {"other": 0}
    for key, n in counts.items():
        label = key if key in top else "other"
        shown[label] = shown.get(label, 0) + n
    return shown


def line_tasks(batch: BatchRecord, line: BatchLine, results: str, now: float) -> list[TaskMessage]:
    """The tasks of one line: a choice each, its deadline the batch's window."""
    return [
        TaskMessage(
            request_id=request_id(batch.id, line.custom_id, str(index)),
            choice_index=index,
            model=choice.model,
            prompt=choice.prompt,
            messages=choice.messages,
            sampling=line.sampling,
            enqueued_at=now,
            deadline=float(batch.expires_at),
            key_id=batch.key_id,
            lane="bulk",
            job_id=batch.id,
            custom_id=line.custom_id,
            results_topic=results,
            line_tasks=len(line.choices),
            choices_per_prompt=line.choices_per_prompt,
        )
        for index, choice in enumerate(line.choices)
    ]


_ANSWERS = {
    "cancelled": "batch {batch} was cancelled before this line was handed out",
    "deadline_exceeded": "the completion window of batch {batch} ended before this line ran",
}


def _answer(
    batch: BatchRecord, number: int, raw: bytes, code: str, message: str | None = None
) -> ResultMessage:
    """The answer of a line the dispatcher never hands out."""
    custom_id = _custom_id(raw) or f"line-{number}"
    text = message or _ANSWERS[code].format(batch=batch.id)
    return ResultMessage(
        request_id=request_id(batch.id, custom_id, "0"),
        choice_index=0,
        model=batch.models[0] if batch.models else "",
        worker_id=DISPATCHER,
        error=TaskError(code=code, message=f"line {number}: {text}" if message else text),
        job_id=batch.id,
        custom_id=custom_id,
        line_tasks=1,
        key_id=batch.key_id,
    )


def _custom_id(raw: bytes) -> str | None:
    try:
        value = json.loads(raw).get("custom_id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


def _line_headers(batch: BatchRecord, task: TaskMessage, topic: str) -> tracing.Headers:
    """A trace of the line's own, linked to the span that created its batch."""
    # A trace per line, not one for the whole batch: a batch of 50,000 lines would make one
    # trace nobody can open, and a line is what one follows when it goes wrong.
    attributes: tracing.Attributes = {
        "kc.batch_id": batch.id,
        "kc.custom_id": task.custom_id or "",
        "gen_ai.request.model": task.model,
    }
    links = [tracing.link_to(batch.traceparent)] if batch.traceparent else []
    line = tracing.sending(
        topic,
        task.request_id,
        attributes,
        context=tracing.new_trace(),
        links=links,
    )
    line.end()
    return tracing.span_headers(line)
