"""The consume/produce loop of one model's consumer group.

One poller fetches records while there is room (``Backend.capacity``), pausing every partition
when there is not, so the consumer keeps polling and never loses its group membership however
long inference takes. Lanes (``plan_lanes``): the interactive partitions come first; the bulk
partitions are paused while interactive tasks are in flight or the last poll brought some, and
bulk tasks never fill more than half the capacity, so an interactive task waits at most for
the batch already generating. Each record is decided by ``worker.admission`` (a task to run,
an expired task, or a dead letter) and tasks go to the backend. One flusher publishes the
decided head of each partition (see ``worker.ledger``) and commits those offsets in the same
Kafka transaction. A fenced producer (a transaction Kafka aborted on its timeout, as after a
broker outage longer than it) is replaced under the same transactional id and the undone
results are published again; fenced again and again, the worker ends (another one has its id).
SIGTERM stops fetching; in-flight work gets ``KC_DRAIN_TIMEOUT_S`` to finish and be committed;
what is left is not committed and another worker of the group runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError, ProducerFenced

from schemas import clients
from schemas.errors import WorkerFenced
from schemas.metrics import WorkerMetrics
from schemas.registry import ModelSpec
from schemas.settings import Settings
from schemas.topics import Topics
from schemas.wire import ResultMessage
from worker.admission import Expired, Fetched, admit, replies_early
from worker.backend import Backend
from worker.cancellations import CancelledBatches
from worker.lag import watch_lag
from worker.ledger import TP, Decision, Ledger, Ready
from worker.publish import publish, result_message, result_topic
from worker.side_channel import Streamer, watch_cancellations
from worker.spans import TaskSpans
from worker.task import Completion, DeadLetter, Delta, Failure, Outcome, Task

log = logging.getLogger(__name__)
_FLUSH_RETRY_S = 1.0
_BULK_SHARE_DIVISOR = 2  # bulk tasks may fill 1/2 of the capacity
# Our transactions last milliseconds; a short timeout bounds how long a killed worker's open
# transaction can hold back read_committed readers when no successor fences it.
_TRANSACTION_TIMEOUT_MS = 10_000
# Fenced more often than this is another live worker with the same id, not a broker outage.
_FENCES_ALLOWED = 3
_FENCE_WINDOW_S = 60.0


class ModelWorker:
    """Serves one model: its consumer group member, its transactional producer, its backend."""

    def __init__(
        self,
        spec: ModelSpec,
        backend: Backend,
        settings: Settings,
        metrics: WorkerMetrics,
        worker_id: str,
    ) -> None:
        self._spec = spec
        self._backend = backend
        self._settings = settings
        self._metrics = metrics
        self._worker_id = worker_id
        self._topics = Topics(settings.topic_prefix)
        self._group = self._topics.worker_group(spec.name)
        self._ledger = Ledger()
        self._decided = asyncio.Event()
        self._settled = asyncio.Event()
        self._runs: set[asyncio.Task[None]] = set()
        self._streamer = Streamer(settings, f"kc-worker-stream-{worker_id}")
        self._cancelled = CancelledBatches()
        self._spans = TaskSpans(settings.tracing, spec.name, worker_id)
        self._producer = self._new_producer()
        self._fences: deque[float] = deque()

    async def run(self, stopping: asyncio.Event) -> None:
        """Serve until ``stopping`` is set, then drain and leave the group."""
        consumer = self._new_consumer()
        await self._producer.start()
        await self._streamer.start()
        await self._cancelled.start(self._settings, f"kc-worker-batch-cancels-{self._worker_id}")
        flusher = asyncio.create_task(self._flush_forever(), name="kc-flusher")
        cancels = asyncio.create_task(watch_cancellations(self._settings, self._backend.cancel))
        lag: asyncio.Task[None] | None = None
        try:
            consumer.subscribe(
                [self._topics.requests(self._spec.name), self._topics.bulk(self._spec.name)],
                listener=_Rebalance(self),
            )
            await consumer.start()
            gauge = self._metrics.consumer_lag
            lag = asyncio.create_task(watch_lag(consumer, gauge, self._spec.name))
            log.info("worker %s serving %s", self._worker_id, self._spec.name)
            await self._poll(consumer, stopping, flusher)
            await self._drain(consumer)
        finally:
            if lag is not None:
                lag.cancel()
            cancels.cancel()
            flusher.cancel()
            await asyncio.wait([flusher])  # a failed flusher's error is what _poll raised
            if flusher.cancelled():
                await self._flush()  # the last decided results
            await consumer.stop()
            await self._producer.stop()
            await self._streamer.stop()
            await self._cancelled.stop()

    @property
    def transactional_id(self) -> str:
        """The results producer's id: the same for this worker's slot across restarts."""
        return f"kc-{self._settings.topic_prefix}{self._spec.name}-{self._worker_id}"

    def _new_producer(self) -> AIOKafkaProducer:
        """The transactional producer of results (not started)."""
        return clients.transactional_producer(
            self._settings,
            f"kc-worker-{self._worker_id}",
            self.transactional_id,
            transaction_timeout_ms=_TRANSACTION_TIMEOUT_MS,
            linger_ms=2,
        )

    def _new_consumer(self) -> AIOKafkaConsumer:
        """The group member reading tasks (not started)."""
        return clients.consumer(
            self._settings,
            f"kc-worker-{self._worker_id}",
            committed_only=True,
            group_id=self._group,
            auto_offset_reset="earliest",
        )

    async def _poll(
        self, consumer: AIOKafkaConsumer, stopping: asyncio.Event, flusher: asyncio.Task[None]
    ) -> None:
        interactive_fetched = False
        bulk_topic = self._topics.bulk(self._spec.name)
        while not stopping.is_set() and not flusher.done():
            assigned = consumer.assignment()
            plan = self._plan(assigned, bulk_topic, interactive_fetched)
            consumer.pause(*plan.pause)
            consumer.resume(*(assigned - plan.pause))
            fetched = await consumer.getmany(
                *plan.fetch, timeout_ms=100, max_records=plan.max_records
            )
            interactive_fetched = any(tp.topic != bulk_topic for tp in fetched)
            tasks = [
                t for tp, records in fetched.items() for r in records if (t := self._admit(tp, r))
            ]
            if tasks:
                self._start_run(tasks)
        if flusher.done():
            flusher.result()  # fenced again and again (WorkerFenced) ends the worker

    def _plan(
        self, assigned: set[TopicPartition], bulk_topic: str, interactive_fetched: bool
    ) -> LanePlan:
        bulk = [(tp.topic, tp.partition) for tp in assigned if tp.topic == bulk_topic]
        in_flight = self._ledger.in_flight()
        bulk_in_flight = self._ledger.in_flight(bulk)
        return plan_lanes(
            assigned,
            bulk_topic,
            capacity=self._backend.capacity,
            in_flight=in_flight,
            bulk_in_flight=bulk_in_flight,
            interactive_busy=interactive_fetched or in_flight > bulk_in_flight,
            throttled=self._backend.throttled_until() > time.time(),
        )

    def _admit(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> Task | None:
        """Take a record: a task to run (returned) or a decision made here (None)."""
        where = (tp.topic, tp.partition)
        self._ledger.take(where, record.offset)
        fetched = Fetched(
            tp.topic,
            tp.partition,
            record.offset,
            record.key,
            record.value,
            record.timestamp,
            record.headers,
        )
        decision = admit(
            fetched,
            self._spec.name,
            time.time(),
            self._cancelled,
            self._topics.is_batch_results,
        )
        if isinstance(decision, DeadLetter):
            self._decide(where, record.offset, decision)
            return None
        task = decision.task if isinstance(decision, Expired) else decision
        self._metrics.queue_time.labels(self._spec.name).observe(
            max(0.0, task.received_at - task.enqueued_at)
        )
        if isinstance(decision, Expired):
            self._finish(task, decision.failure)
            return None
        return task

    def _start_run(self, tasks: Sequence[Task]) -> None:
        self._metrics.batch_size.labels(self._spec.name).observe(len(tasks))
        run = asyncio.create_task(self._run(tasks), name="kc-run")
        self._runs.add(run)
        run.add_done_callback(self._runs.discard)

    async def _run(self, tasks: Sequence[Task]) -> None:
        pending = {id(t): t for t in tasks}
        try:
            async for task, event in self._backend.run(tasks):
                if isinstance(event, Delta):
                    await self._streamer.send(task, event.text)
                    continue
                pending.pop(id(task), None)
                self._streamer.forget(task)
                result = self._finish(task, event)
                if replies_early(task, self._settings.early_replies):
                    await self._streamer.reply(task, result, self._spans.headers(task))
        except Exception as exc:  # a backend bug fails its tasks, never the worker
            log.exception("backend %s failed a batch", self._spec.backend)
            for task in pending.values():
                self._finish(task, Failure("backend_error", f"{self._spec.name} failed: {exc}"))

    def _finish(self, task: Task, outcome: Outcome) -> ResultMessage:
        """Log, count and decide a task's outcome; the result message the ledger now holds."""
        model = self._spec.name
        msg = task.message
        result = "done" if isinstance(outcome, Completion) else outcome.code
        log.info(
            "task %s/%d %s",
            msg.request_id,
            msg.choice_index,
            result,
            extra={
                "request_id": msg.request_id,
                "model": model,
                "choice_index": msg.choice_index,
                "outcome": result,
                "job_id": msg.job_id,
            },
        )
        if isinstance(outcome, Completion):
            self._metrics.prompt_tokens.labels(model).inc(outcome.prompt_tokens)
            self._metrics.completion_tokens.labels(model).inc(outcome.completion_tokens)
            self._metrics.generation_time.labels(model).observe(outcome.prediction_time_ms / 1000)
        message = result_message(task, outcome, self._worker_id)
        self._spans.answered(task, outcome, result_topic(task, self._topics))
        self._decide((task.topic, task.partition), task.offset, (task, message))
        return message

    def _decide(self, tp: TP, offset: int, decision: Decision) -> None:
        if self._ledger.decide(tp, offset, decision):
            self._decided.set()

    async def _flush_forever(self) -> None:
        while True:
            await self._decided.wait()
            self._decided.clear()
            try:
                await self._flush()
            except ProducerFenced as exc:
                self._fenced(exc)
                await self._renew_producer()
                self._decided.set()  # the aborted transaction's results go out again

    def _fenced(self, exc: ProducerFenced) -> None:
        """Count a fence; past ``_FENCES_ALLOWED`` in the window, end the worker."""
        now = time.monotonic()
        self._fences.append(now)
        while now - self._fences[0] > _FENCE_WINDOW_S:
            self._fences.popleft()
        if len(self._fences) > _FENCES_ALLOWED:
            raise WorkerFenced(
                f"worker {self._worker_id}: its results producer was fenced {len(self._fences)} "
                f"times in {_FENCE_WINDOW_S:.0f} s, so another live worker has the same id; "
                "give every worker its own KC_WORKER_ID"
            )
        log.warning(
            "the results producer was fenced (Kafka aborted its transaction, as after an "
            "outage longer than %d ms, or another worker took its id): %d results go out again "
            "from a new producer (%r)",
            _TRANSACTION_TIMEOUT_MS,
            self._ledger.in_flight(),
            exc.__cause__ or exc,
        )

    async def _renew_producer(self) -> None:
        """A new producer under the same transactional id: starting it fences the old epoch
        (its open transaction aborts) and the ledger's undone results are published again."""
        old, self._producer = self._producer, self._new_producer()
        with contextlib.suppress(KafkaError):
            await old.stop()
        while True:
            try:
                await self._producer.start()
                return
            except KafkaError as exc:
                log.warning("starting a new results producer failed, retrying: %r", exc)
                with contextlib.suppress(KafkaError):
                    await self._producer.stop()
                self._producer = self._new_producer()
                await asyncio.sleep(_FLUSH_RETRY_S)

    async def _flush(self) -> None:
        """Publish the decided heads and commit their offsets, all in one transaction."""
        ready = self._ledger.ready()
        if not ready:
            return
        producer = self._producer
        try:
            async with producer.transaction():
                await publish(producer, self._topics, ready, self._spans.headers)
                offsets = {TopicPartition(r.topic, r.partition): r.commit_offset for r in ready}
                await producer.send_offsets_to_transaction(offsets, self._group)
        except ProducerFenced:
            raise
        except KafkaError as exc:
            if _unusable(producer):
                raise ProducerFenced() from exc  # renewed the same way as a fence
            log.warning("publishing %d results failed, retrying: %r", _count(ready), exc)
            await asyncio.sleep(_FLUSH_RETRY_S)
            self._decided.set()
            return
        self._ledger.settle(ready)
        self._spans.published([d[0] for r in ready for d in r.decisions if isinstance(d, tuple)])
        self._settled.set()
        self._count_settled(ready)

    def _count_settled(self, ready: list[Ready]) -> None:
        model = self._spec.name
        for r in ready:
            for decision in r.decisions:
                if isinstance(decision, DeadLetter):
                    self._metrics.dead_letters.labels(model).inc()
                    outcome = "dead_lettered"
                elif (error := decision[1].error) is not None:
                    outcome = error.code
                else:
                    outcome = "done"
                self._metrics.tasks.labels(model, outcome).inc()
        self._metrics.in_flight.labels(model).set(self._ledger.in_flight())

    async def _drain(self, consumer: AIOKafkaConsumer) -> None:
        consumer.pause(*consumer.assignment())
        await self._until_settled(None)
        left = self._ledger.undecided()
        if left:
            log.warning("drain bound reached: %d tasks left uncommitted for another worker", left)
        for run in list(self._runs):
            run.cancel()

    async def _until_settled(self, tps: list[TP] | None) -> None:
        """Wait until the partitions (all when None) have nothing in flight, within the bound."""
        deadline = time.monotonic() + self._settings.drain_timeout_s
        while self._ledger.in_flight(tps) and (left := deadline - time.monotonic()) > 0:
            self._settled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), left)

    async def release(self, revoked: list[TP]) -> None:
        """Partitions are being taken away: let their work finish (bounded), then forget it."""
        await self._until_settled(revoked)
        dropped = self._ledger.drop(revoked)
        self._spans.forget(revoked)
        if dropped:
            log.warning("rebalance: %d uncommitted tasks left to the new owner", dropped)


def _unusable(producer: AIOKafkaProducer) -> bool:
    """Whether the producer's transactions failed for good (a fatal error: fenced, a sequence
    out of order, its sender dead). aiokafka has no public check; its transaction manager's
    state is the one place that knows, and a producer in it can never begin again."""
    manager = producer._txn_manager
    return manager is not None and bool(manager.is_fatal_error())


@dataclass(frozen=True, slots=True)
class LanePlan:
    """The next poll: partitions to pause, partitions to take records from, how many at most.

    An empty ``fetch`` means every partition (and then every one is paused).
    """

    pause: set[TopicPartition]
    fetch: set[TopicPartition]
    max_records: int


def plan_lanes(
    assigned: set[TopicPartition],
    bulk_topic: str,
    *,
    capacity: int,
    in_flight: int,
    bulk_in_flight: int,
    interactive_busy: bool,
    throttled: bool,
) -> LanePlan:
    """The lane policy: interactive first; bulk only when no interactive work waits."""
    room = capacity - in_flight
    if room <= 0 or throttled:
        return LanePlan(set(assigned), set(), 1)
    interactive = {tp for tp in assigned if tp.topic != bulk_topic}
    if interactive_busy:
        return LanePlan(set(assigned) - interactive, interactive, room)
    # Half the capacity stays free of bulk work: with a batching backend (capacity = two
    # batches) an interactive task then joins the very next batch instead of queueing behind
    # a bulk batch that is already waiting. A full bulk share only narrows the poll: pausing
    # would drop the records already fetched and cost a fetch round trip per bulk batch.
    bulk_room = max(1, capacity // _BULK_SHARE_DIVISOR) - bulk_in_flight
    if bulk_room <= 0:
        return LanePlan(set(), interactive, room)
    return LanePlan(set(), set(assigned), min(room, bulk_room))


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: ModelWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._worker.release([(tp.topic, tp.partition) for tp in revoked])

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("assigned %d partitions", len(assigned))


def _count(ready: list[Ready]) -> int:
    return sum(len(r.decisions) for r in ready)
