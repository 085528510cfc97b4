"""`sessionizer run`: consume -> the core -> one Kafka transaction, per commit interval.

The loop (one process, one transactional producer, EOS v2 / KIP-447):

1. consume a batch; each record goes to its input partition's core Partition;
2. idle partitions (at their end, no record for `idle_timeout`) have their stream
   time moved on by the wall-clock time since their last record, so the last
   windows close when traffic stops;
3. every `commit_interval`: one transaction holds the final records, the dead
   letters, the changelog of every state change, and the input offsets
   (`send_offsets_to_transaction` with the consumer's group metadata).

Nothing reaches Kafka outside a transaction, and the core buffers its output
until then, so a crash at any moment loses only uncommitted work, which the
next owner of the partition redoes from the committed offsets and the
changelog. A failed transaction is aborted and the partitions are rewound to
their last commit the same way.
"""

from __future__ import annotations

import concurrent.futures
import gc
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from .. import __version__
from ..config import RunSettings
from ..monitoring.health import Health
from ..monitoring.metrics import RunMetrics, StatsMark, Tally, new_registry
from ..monitoring.redact import config_view, redact
from ..monitoring.server import Monitor, MonitoringServer, serve
from ..monitoring.status import PartitionRow, Snapshot
from ..shutdown import STOP
from ..core.envelope import shrink_dead_letter
from ..core.events import KAFKA_TIMESTAMP
from ..core.native import CorePartition, core_name, new_partition
from .changelog import changelog_records, restore_partitions
from .clients import MAX_MESSAGE_BYTES, check_access, consumer_config, new_admin, producer_config
from .topics import TopicError, ensure_topics, offsets_metadata

log = logging.getLogger("sessionizer.run")

PARTITION_EOF = KafkaError._PARTITION_EOF
POLL_SECONDS = 0.1
BACKOFF_MAX_SECONDS = 30.0
CALL_TIMEOUT_SECONDS = 30.0
OBSERVE_SECONDS = 1.0  # how often gauges and the status page are brought up to date
# No broker answers: nothing is consumed or committed until Kafka is back.
OUTAGE_ERROR = KafkaError._ALL_BROKERS_DOWN
# One broker away or slow: librdkafka reconnects while the cluster moves its leaders and
# coordinators to the other brokers; the job goes on (a transaction that fails is redone).
BROKER_ERRORS = {KafkaError._TRANSPORT, KafkaError._RESOLVE, KafkaError._TIMED_OUT}
BROKER_ADDRESS = re.compile(r"[^\s/:]+:\d+")  # "127.0.0.1:9092", "b-1.msk.amazonaws.com:9096"
SAME_LINE_EVERY_SECONDS = 60.0  # a fault is said once, not at every reconnect attempt
STALE_EVENT_SECONDS = 10.0  # error events this soon after Kafka answered again were queued before


@dataclass
class PartitionTask:
    """One assigned input partition: its core, and what the idle clock needs."""

    part: CorePartition
    last_record_at: float  # monotonic seconds: the last record, or the restore
    last_record_time: int  # stream time then
    next_offset: int  # the offset after the last record fed (at first, the committed offset)
    at_end: bool = False  # the consumer has reached the partition's end since that record
    mark: StatsMark = field(default_factory=StatsMark)  # its counts when the last transaction was made
    final_since: float | None = None  # monotonic: when its oldest final record not in a transaction appeared
    # Kept through a rebalance: librdkafka may resume such a partition one record past where we are
    # (seen on a cluster with cooperative-sticky: the first record after the rebalance is then never
    # delivered). Its first record afterwards must be the one at next_offset, or we seek back to it.
    check_position: bool = False


@dataclass
class Counters:
    records: int = 0
    transactions: int = 0
    rewinds: int = 0
    client_errors: int = 0  # since the last status line
    last_status: float = field(default_factory=time.monotonic)
    records_at_last_status: int = 0


class Runtime:
    def __init__(self, settings: RunSettings, stop: threading.Event = STOP) -> None:
        self.settings = settings
        self.tasks: dict[int, PartitionTask] = {}
        self.offsets: dict[int, int] = {}  # input partition -> next offset, not yet committed
        self._stop = stop
        self.counters = Counters()
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self._last_commit = time.monotonic()
        self._input = settings.input_topic
        self._offsets_metadata = offsets_metadata(settings)  # which changelogs hold the state of these offsets
        self._outage_since: float | None = None  # set by error callbacks, cleared by a successful probe
        self._outage_said = False  # the outage was logged, not only suspected
        self._back_at = float("-inf")  # when Kafka last answered again after an outage
        self._said: dict[str, float] = {}  # fault line -> when it was last logged
        self._time_from_kafka = settings.spec.fields.time == KAFKA_TIMESTAMP  # event time = record timestamp
        self._closing: TransactionCloser | None = None  # the transaction being committed, if any
        self._queue_limit = 0  # messages the producer's local queue holds (set with the producer)
        self.metrics = RunMetrics(new_registry())
        self.health = Health(settings.metrics.stuck_after_s) if settings.metrics else Health()
        self._restoring: list[int] | None = None  # partitions being restored now
        self._assigned_once = False  # the group has given this member its (maybe empty) share
        self._last_observed = 0.0
        self.monitor = Monitor("sessionizer run", {
            "mode": "run", "input": self._input, "group": settings.group_id, "client": settings.client_id,
            "transactional id": settings.transactional_id, "core": core_name(), "version": __version__,
        }, self.health, self.metrics.registry, {}, self.metrics.recent_dead_letters)
        self._server: MonitoringServer | None = None

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> int:
        log.info("starting", extra={"bootstrap": self.settings.bootstrap_servers, "input": self._input,
                                    "group": self.settings.group_id,
                                    "transactional_id": self.settings.transactional_id, "core": core_name()})
        consumer = self.settings.consumer
        if consumer.get("group.instance.id") and "cooperative" in str(consumer.get("partition.assignment.strategy")):
            log.warning("group.instance.id with a cooperative assignor: a member killed during a rebalance can "
                        "leave partitions with no owner until the group changes again; the default with "
                        "group.instance.id is the eager \"range\"")
        self._start_monitoring()
        try:
            return self._run()
        finally:
            if self._server is not None:
                self._server.close()

    def _start_monitoring(self) -> None:
        settings, metrics = self.settings, self.metrics
        metrics.info.info({"version": __version__, "mode": "run", "core": core_name(), "group": settings.group_id,
                           "input_topic": self._input, "client_id": settings.client_id})
        metrics.commit_interval.set(settings.commit_interval_ms / 1000)
        metrics.last_commit.set(time.time())  # "no commit since" counts from the start
        metrics.declare([], list(settings.spec.topics))
        self.monitor.config = {
            "config file": config_view(settings.config),
            "consumer (librdkafka properties)": redact(consumer_config(settings)),
            "producer (librdkafka properties)": redact(producer_config(settings)),
        }
        self._server = serve(self.monitor, settings.metrics)

    def _run(self) -> int:
        check_access(self.settings)
        # The transactional producer starts while the topics are checked and the group is joined:
        # its first call waits on the transaction coordinator (0.06 to 1 s on the bench's broker),
        # the checks on the admin API (0.1 to 0.2 s), the join on the group coordinator (0.1 s).
        # Nothing is consumed before it is ready: assignments come with the first consume.
        producer = in_background(lambda: self._retry("start the transactional producer", self._new_producer))
        self._retry("create topics", self._ensure_topics)
        if self.stopping:
            return 0
        self.consumer = Consumer({**consumer_config(self.settings), "error_cb": self._on_client_error})
        self.consumer.subscribe([self._input], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)
        try:
            self.producer = producer.result()
            while not self.stopping:
                self._step()
            self._commit()
            self._settle()
        finally:
            self._stop.set()
            self.consumer.close()  # revokes what is left (nothing pending by now)
            if self.producer is not None:
                self.producer.flush(10)
        log.info("stopped", extra={"records": self.counters.records, "transactions": self.counters.transactions})
        return 0

    def _step(self) -> None:
        assert self.consumer is not None
        self.health.beat("consuming")
        if self._outage_since is not None:
            self._settle()  # the transaction in flight, before the producer may be replaced
            if not self._kafka_is_back():
                if not self._outage_said:  # a probe failed: the stale-looking event held
                    self._say_outage({})
                time.sleep(0.5)  # nothing is consumed or committed while Kafka is away
                self._maybe_status(time.monotonic())
                return
        messages = self.consumer.consume(num_messages=self.settings.batch_size, timeout=POLL_SECONDS)
        if messages:
            self._feed(messages)
        # Serves the producer's callbacks, its `oauth_cb` among them: an idle producer's token
        # must be renewed before it expires, not when the next transaction needs it.
        self.producer.poll(0)
        self._advance_idle()
        now = time.monotonic()
        if (now - self._last_commit) * 1000 >= self.settings.commit_interval_ms:
            self._commit()
        self._maybe_status(now)
        if now - self._last_observed >= OBSERVE_SECONDS:
            self._observe(now)

    # -- records in ----------------------------------------------------------------------

    def _feed(self, messages: list[Message]) -> None:
        # A batch holds runs of one partition's records: each run goes to its core in one call
        # (per record, the compiled core then does all the work).
        tasks, with_timestamp = self.tasks, self._time_from_kafka
        fed: set[int] = set()  # partitions that got records in this batch
        ended: set[int] = set()  # partitions whose end came after their last record in this batch
        replayed: dict[int, int] = {}  # partition -> records skipped as already fed
        sought: set[int] = set()  # partitions sent back to their next offset: the rest of this batch is ahead
        index, total, count = 0, len(messages), 0
        while index < total:
            message = messages[index]
            error = message.error()
            if error is not None:
                if error.code() == PARTITION_EOF:
                    ended.add(message.partition())
                else:
                    self._consumer_error(error)
                index += 1
                continue
            partition = message.partition()
            task = tasks.get(partition)
            if task is None or partition in sought:  # revoked while this batch was in flight, or ahead
                index += 1
                continue
            if task.check_position:
                task.check_position = False
                if message.offset() > task.next_offset:  # one seek back: a gap (a marker, compaction) stays a gap
                    log.warning("the consumer skipped ahead after a rebalance: seeking back",
                                extra={"partition": partition, "at": message.offset(), "seeking_to": task.next_offset})
                    self.consumer.seek(TopicPartition(self._input, partition, task.next_offset))
                    sought.add(partition)
                    index += 1
                    continue
            if message.offset() < task.next_offset:
                # Already fed: the consumer went back without our seek (librdkafka resets a position
                # it finds out of range to the beginning). Feeding it again would duplicate output.
                replayed[partition] = replayed.get(partition, 0) + 1
                index += 1
                continue
            ended.discard(partition)
            index, task.next_offset, run = task.part.feed_messages(messages, index, partition, task.next_offset,
                                                                   with_timestamp)
            fed.add(partition)
            count += run
        now = time.monotonic()
        for partition in fed:
            task = tasks[partition]
            self.offsets[partition] = task.next_offset
            task.last_record_at, task.last_record_time, task.at_end = now, task.part.stream_time, False
            if task.final_since is None and task.part.has_output:
                task.final_since = now
        self.counters.records += count
        for partition in ended:
            task = tasks.get(partition)
            if task is not None:
                task.at_end = True
        for partition, skipped in replayed.items():
            log.warning("the consumer went back on its own: skipped records already processed",
                        extra={"partition": partition, "records": skipped, "resuming_at": tasks[partition].next_offset})

    def _advance_idle(self) -> None:
        idle_timeout = self.settings.idle_timeout_ms
        if idle_timeout is None:
            return
        now = time.monotonic()
        for task in self.tasks.values():
            if task.at_end and task.last_record_time >= 0:
                idle_ms = int((now - task.last_record_at) * 1000)
                if idle_ms >= idle_timeout:
                    task.part.advance(task.last_record_time + idle_ms)
                    self.metrics.idle_advances.inc()
                    if task.final_since is None and task.part.has_output:
                        task.final_since = now

    def _consumer_error(self, error: KafkaError) -> None:
        if error.fatal():
            raise KafkaException(error)
        log.warning("consumer error (retrying)", extra={"error": error.str()})

    # -- the transaction -------------------------------------------------------------------

    def _commit(self) -> None:
        """Settle the transaction in flight, then produce the next one: final records, dead
        letters, changelog and input offsets. A thread commits it while records keep coming in;
        the next commit, a revoke and stopping all wait for it first."""
        if not self._settle():
            return
        self._last_commit = time.monotonic()
        if not self.offsets and not any(task.part.has_pending for task in self.tasks.values()):
            return
        if self._outage_since is not None and not self._kafka_is_back():
            return  # kept for the next commit once Kafka is back
        assert self.producer is not None and self.consumer is not None
        producer = self.producer
        offsets, metadata = None, None
        tally = Tally()
        try:
            producer.begin_transaction()
            for partition, task in self.tasks.items():
                tally.take(partition, task.part.stats, task.mark)
                if task.final_since is not None:
                    tally.final_since.append(task.final_since)
                    task.final_since = None
                self._produce_outputs(task.part, tally)
                for topic, records in changelog_records(self.settings, task.part).items():
                    self._produce_many(topic, records, partition)
            if self.offsets:
                offsets = [TopicPartition(self._input, p, offset, metadata=self._offsets_metadata)
                           for p, offset in self.offsets.items()]
                metadata = self.consumer.consumer_group_metadata()
        except KafkaException as failure:
            self._abort(failure.args[0])  # and rewind: the work is redone from the last commit
            return
        self.offsets.clear()  # (a failed commit rewinds to the committed offsets anyway)
        self._closing = TransactionCloser(producer, offsets, metadata, tally)

    def _settle(self) -> bool:
        """Wait for the transaction in flight to commit. False when it failed: everything since
        the last commit was then rewound, to be redone."""
        closing, self._closing = self._closing, None
        if closing is None:
            return True
        try:
            closing.wait()
        except KafkaException as failure:
            self._abort(failure.args[0])
            return False
        except StuckCall as stuck:
            self.metrics.count_transaction("failed")
            # librdkafka can block in send_offsets_to_transaction past its timeout when the group
            # coordinator goes away during the call (issues #5456, #5511). That producer is left to
            # its thread; a new one with the same transactional id fences it (its transaction is
            # aborted by the coordinator), and the partitions are rewound to their last commit.
            log.error("a transactional call is stuck: replacing the producer and rewinding",
                      extra={"call": str(stuck)})
            self.producer = self._retry("restart the transactional producer", self._new_producer)
            self._rewind()
            return False
        self.counters.transactions += 1
        self.metrics.committed(closing.tally, closing.seconds, time.time(), time.monotonic())
        return True

    def _abort(self, error: KafkaError) -> None:
        """After a failed transaction: abort it and rewind every partition to the last commit."""
        log.error("transaction failed: aborting and rewinding to the last commit",
                  extra={"error": error.str(), "fatal": error.fatal()})
        assert self.producer is not None
        result = "aborted"
        if error.fatal() or self._outage_since is not None:
            # (No broker answers: an abort would only wait out its timeout. The new producer's
            # init_transactions, once Kafka is back, aborts the open transaction instead.)
            result = "failed"
            self.producer = self._retry("restart the transactional producer", self._new_producer)
        else:
            try:
                self.producer.abort_transaction(30)
            except KafkaException as abort_failure:
                result = "failed"
                log.error("abort failed: restarting the producer", extra={"error": abort_failure.args[0].str()})
                self.producer = self._retry("restart the transactional producer", self._new_producer)
        self.metrics.count_transaction(result)
        self._rewind()

    def _rewind(self) -> None:
        """Drop uncommitted work: restore every partition from the changelog, seek to its committed offset."""
        assert self.consumer is not None
        self.counters.rewinds += 1
        self.metrics.rewinds.inc()
        partitions = sorted(self.tasks)
        self.offsets.clear()
        for tp in self._restore(partitions):
            if tp.offset >= 0:
                self.consumer.seek(tp)
            else:  # nothing committed yet: from the beginning (auto.offset.reset)
                self.consumer.seek(TopicPartition(self._input, tp.partition, 0))

    def _committed(self, partitions: list[int]) -> list[TopicPartition]:
        assert self.consumer is not None
        return self._retry("read the committed input offsets", lambda: self.consumer.committed(
            [TopicPartition(self._input, p) for p in partitions], timeout=30))

    def _produce_outputs(self, part: CorePartition, tally: Tally) -> None:
        dead_letter_topic = self.settings.spec.dead_letter_topic
        for topic, records in part.drain_by_topic().items():
            tally.out[topic] += len(records)
            if topic == dead_letter_topic:
                tally.letters.extend(value for _, value in records[-self.metrics.recent_dead_letters.maxlen:])
                for key, value in records:
                    if len(value) > MAX_MESSAGE_BYTES - 1024:
                        value = shrink_dead_letter(value, MAX_MESSAGE_BYTES - 1024)
                    self._produce(topic, value, key.encode("utf-8") if key is not None else None)
            else:
                self._produce_many(topic, records)

    def _produce_many(self, topic: str, records: list[tuple[Any, bytes | None]], partition: int = -1) -> None:
        """(key, value) records in order: in one produce_batch call when the local queue has room
        for all of them (so none can be refused halfway and the rest reordered), else one by one."""
        producer = self.producer
        assert producer is not None
        if len(records) > 1 and len(producer) + len(records) <= self._queue_limit:
            messages = [{"key": key, "value": value} for key, value in records]
            if partition >= 0:
                queued = producer.produce_batch(topic, messages, partition=partition)
            else:
                queued = producer.produce_batch(topic, messages)
            if queued != len(messages):  # not expected with room in the queue: the transaction is redone
                raise KafkaException(next(m["_error"] for m in messages if "_error" in m))
            return
        for key, value in records:
            self._produce(topic, value, key.encode("utf-8") if type(key) is str else key, partition)

    def _produce(self, topic: str, value: bytes | None, key: bytes | None, partition: int = -1) -> None:
        assert self.producer is not None
        while True:
            try:
                if partition >= 0:
                    self.producer.produce(topic, value, key, partition=partition)
                else:
                    self.producer.produce(topic, value, key)
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                self.producer.poll(0.1)

    # -- partitions come and go ------------------------------------------------------------------

    def _check_positions(self) -> None:
        for task in self.tasks.values():
            task.check_position = True

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._check_positions()
        new = sorted(tp.partition for tp in partitions if tp.topic == self._input and tp.partition not in self.tasks)
        if new:
            self.metrics.rebalances.labels("assigned").inc()
            self._restore(new)
        self._assigned_once = True
        self._update_readiness()
        log.info("assigned", extra={"partitions": ",".join(map(str, new)) or "-"})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if not self.stopping or self.offsets:
            self._commit()  # everything done so far, revoked partitions included, is committed first
        self._settle()  # and confirmed, before another member can take them
        gone = [tp.partition for tp in partitions if tp.topic == self._input]
        self._forget(gone, "revoked")
        self._check_positions()
        log.info("revoked", extra={"partitions": ",".join(map(str, sorted(gone))) or "-"})

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Another member owns them now: their uncommitted work must not be committed by us.
        gone = [tp.partition for tp in partitions if tp.topic == self._input]
        self._forget(gone, "lost")
        self._check_positions()
        log.warning("lost partitions (their uncommitted work is dropped)",
                    extra={"partitions": ",".join(map(str, sorted(gone)))})

    def _forget(self, partitions: list[int], event: str) -> None:
        if partitions:
            self.metrics.rebalances.labels(event).inc()
        for partition in partitions:
            self.tasks.pop(partition, None)
            self.offsets.pop(partition, None)
            self.metrics.forget_partition(partition, [r.topic for r in self.settings.spec.rolling])

    def _restore(self, partitions: list[int]) -> list[TopicPartition]:
        """Tasks for `partitions` from their changelog, each resuming at its committed offset
        (nothing before it is fed again); returns those offsets."""
        self._restoring = partitions
        self._update_readiness()
        self.health.beat("restoring")
        started = time.monotonic()
        try:
            parts, records = restore_partitions(self.settings, partitions, self._new_partition, self.health.beat)
            committed = self._committed(partitions)
        finally:
            self._restoring = None
        now = time.monotonic()
        for tp in committed:
            part = parts[tp.partition]
            self.tasks[tp.partition] = PartitionTask(part, now, part.stream_time, max(tp.offset, 0))
        self.metrics.restores.inc()
        self.metrics.restore_count += 1
        self.metrics.restored_records.inc(records)
        self.metrics.restore_duration.observe(now - started)
        self.metrics.declare(partitions, [])
        self._update_readiness()
        return committed

    def _new_partition(self, partition: int) -> CorePartition:
        topic = self._input

        def describe(message: Message) -> dict[str, Any]:
            timestamp_type, timestamp = message.timestamp()
            return {"topic": topic, "partition": message.partition(), "offset": message.offset(),
                    "timestamp": timestamp if timestamp_type else None}

        return new_partition(self.settings.spec, track_changes=True, describe_source=describe)

    # -- clients, retries, status ------------------------------------------------------------------

    def _ensure_topics(self) -> None:
        admin = new_admin(self.settings)
        partitions = ensure_topics(admin, self.settings)
        log.info("topics ready", extra={"input_partitions": partitions})

    def _new_producer(self) -> Producer:
        config = producer_config(self.settings)
        producer = Producer({**config, "error_cb": self._on_client_error})
        self._queue_limit = int(config["queue.buffering.max.messages"])
        producer.poll(0)  # serves an `oauth_cb`: without a token init_transactions waits for nothing
        producer.init_transactions(CALL_TIMEOUT_SECONDS)
        return producer

    def _on_client_error(self, error: KafkaError) -> None:
        self.counters.client_errors += 1
        text = error.str()
        if error.code() == OUTAGE_ERROR:
            if self._outage_since is None:
                now = time.monotonic()
                self._outage_since, self._outage_said = now, False
                self._update_readiness()
                # Just after Kafka answered again, this is an event queued during the outage: the
                # next step's probe clears it quietly, or says it if it holds.
                if now - self._back_at > STALE_EVENT_SECONDS:
                    self._say_outage({"error": text})
        elif error.fatal():
            log.error("fatal client error", extra={"error": text})
        elif error.code() in BROKER_ERRORS:
            # "host:port/node: ...", "host:port/bootstrap: ...", "GroupCoordinator: host:port: ...":
            # one broker, one line (none while the whole of Kafka is away: that has its own).
            address = BROKER_ADDRESS.search(text)
            broker = address.group(0) if address else text
            settled = self._outage_since is None and time.monotonic() - self._back_at > STALE_EVENT_SECONDS
            if settled and self._say_once(broker):
                log.warning("a broker is unreachable: reconnecting, going on with the others (its leaders and "
                            "coordinators move to them)", extra={"broker": broker, "error": text})
        elif self._say_once(text):
            log.warning("client error", extra={"error": text})

    def _say_outage(self, extra: dict[str, Any]) -> None:
        self._outage_said = True
        log.warning("Kafka unreachable, no broker answers: pausing until one does",
                    extra={**extra, "bootstrap": self.settings.bootstrap_servers})

    def _say_once(self, fault: str) -> bool:
        """Whether a line about `fault` is due: not when the same was said in the last minute."""
        now = time.monotonic()
        if now - self._said.get(fault, -SAME_LINE_EVERY_SECONDS) < SAME_LINE_EVERY_SECONDS:
            return False
        self._said[fault] = now
        return True

    def _kafka_is_back(self) -> bool:
        """A metadata round trip and the group coordinator (committed offsets) both answer."""
        assert self.consumer is not None
        try:
            self.consumer.list_topics(self._input, timeout=2)
            if self.tasks:
                self.consumer.committed([TopicPartition(self._input, p) for p in self.tasks], timeout=2)
        except KafkaException:
            return False
        paused = round(time.monotonic() - (self._outage_since or time.monotonic()), 1)
        self._outage_since = None
        self._update_readiness()
        if not self._outage_said:
            return True  # a stale callback: Kafka answered at once, nothing to redo
        self._back_at = time.monotonic()
        log.info("Kafka answers again: resuming with a fresh transactional producer", extra={"paused_s": paused})
        # librdkafka's producer can keep a stale coordinator after an outage and then block in
        # send_offsets_to_transaction (issues #5456, #5511). It had no open transaction while we
        # paused, so a new one with the same transactional id takes over cleanly.
        self.producer = self._retry("restart the transactional producer", self._new_producer)
        return True

    def _retry(self, what: str, action: Any) -> Any:
        delay = 1.0
        while True:
            self.health.beat(f"trying to {what}")  # waiting on purpose is not being stuck
            try:
                return action()
            except (KafkaException, TopicError) as failure:
                error = failure.args[0] if failure.args else failure
                text = error.str() if isinstance(error, KafkaError) else str(error)
                if isinstance(error, KafkaError) and error.fatal():
                    raise
                if self.stopping:
                    raise SystemExit(1) from None
                if self._say_once(f"cannot {what}"):
                    log.warning(f"cannot {what} yet: retrying", extra={"error": text, "in_s": delay,
                                                                       "bootstrap": self.settings.bootstrap_servers})
                self.health.not_ready(f"cannot {what} yet: {text}")
                time.sleep(delay)
                self._maybe_status(time.monotonic())
                delay = min(delay * 2, BACKOFF_MAX_SECONDS)

    def _maybe_status(self, now: float) -> None:
        if self.settings.status_interval_ms is not None and \
                (now - self.counters.last_status) * 1000 >= self.settings.status_interval_ms:
            self._status(now)

    def _status(self, now: float) -> None:
        counters = self.counters
        elapsed = now - counters.last_status
        rate = (counters.records - counters.records_at_last_status) / elapsed if elapsed > 0 else 0.0
        counters.last_status, counters.records_at_last_status = now, counters.records
        # While Kafka is away the lag is unknown: the line says since when instead.
        kafka = "up" if self._outage_since is None else f"unreachable for {now - self._outage_since:.0f} s"
        log.info("status", extra={
            "records_per_s": round(rate), "records": counters.records, "partitions": len(self.tasks),
            "open_windows": sum(task.part.open_windows for task in self.tasks.values()),
            "lag": self._lag() if self._outage_since is None and self.consumer else None,
            "transactions": counters.transactions,
            "rewinds": counters.rewinds, "kafka": kafka, "client_errors": counters.client_errors})
        counters.client_errors = 0

    def _lag(self) -> int:
        return sum(lag for lag in self._lags().values() if lag is not None)

    def _lags(self) -> dict[int, int | None]:
        """Per assigned partition, records not consumed yet (None while unknown)."""
        assert self.consumer is not None
        lags: dict[int, int | None] = {}
        for partition in self.tasks:
            tp = TopicPartition(self._input, partition)
            lags[partition] = None
            try:
                _, high = self.consumer.get_watermark_offsets(tp, cached=True)
                position = self.consumer.position([tp])[0].offset
            except KafkaException:
                continue
            if high >= 0 and position >= 0:
                lags[partition] = max(0, high - position)
        return lags

    # -- what the monitoring endpoints show ---------------------------------------------------

    def _update_readiness(self) -> None:
        health = self.health
        if self._outage_since is not None:
            health.not_ready(f"Kafka unreachable for {time.monotonic() - self._outage_since:.0f} s: waiting for it")
        elif self._restoring is not None:
            health.not_ready(f"restoring partitions {','.join(map(str, self._restoring))} from their changelogs")
        elif not self._assigned_once:
            health.not_ready("waiting for the consumer group to assign partitions")
        else:
            health.set_ready(f"consuming {len(self.tasks)} partition(s)")

    def _observe(self, now: float) -> None:
        """Gauges and the status page's snapshot, from the main loop (about once a second)."""
        self._last_observed = now
        metrics, wall = self.metrics, time.time()
        self._update_readiness()
        lags = self._lags() if self.consumer is not None else {}
        rows = []
        for partition, task in sorted(self.tasks.items()):
            label, part = str(partition), task.part
            counts = part.open_counts
            sessions = counts.pop("sessions", 0)
            stream_time = part.stream_time
            behind = wall - stream_time / 1000 if stream_time >= 0 else None
            metrics.open_sessions.labels(label).set(sessions)
            for name, count in counts.items():
                metrics.open_windows.labels(label, name).set(count)
            if stream_time >= 0:
                metrics.stream_time.labels(label).set(stream_time / 1000)
                metrics.stream_time_behind.labels(label).set(behind)
            if lags.get(partition) is not None:
                metrics.consumer_lag.labels(label).set(lags[partition])
            rows.append(PartitionRow(partition, lags.get(partition), stream_time, behind, sessions, counts,
                                     metrics.read_totals[label]))
        metrics.assigned.set(len(self.tasks))
        metrics.uncommitted.set(len(self.offsets))
        queue = len(self.producer) if self.producer is not None else 0
        metrics.producer_queue.set(queue)
        self.monitor.throughput.sample(self.counters.records)
        self.monitor.snapshot = Snapshot(
            taken_at=wall, partitions=tuple(rows), producer_queue=queue,
            transactions=dict(metrics.transaction_totals), last_commit_at=metrics.last_commit_at,
            rewinds=self.counters.rewinds, restores=metrics.restore_count, dead_letters=dict(metrics.dead_letter_totals),
            extra={"records consumed (since start, with redone work)": self.counters.records})


def run(settings: RunSettings) -> int:
    """`sessionizer run`: the process is this run's own (in-process callers keep their collector as is)."""
    tune_gc()
    return Runtime(settings).run()


def in_background(call: Callable[[], Any]) -> concurrent.futures.Future:
    """`call` in a daemon thread (a start-up step that must not keep a failed start from exiting);
    its result, or its exception, in the future returned."""
    future: concurrent.futures.Future = concurrent.futures.Future()

    def run() -> None:
        try:
            future.set_result(call())
        except BaseException as error:  # SystemExit from a retry cut short by a stop, too
            future.set_exception(error)

    threading.Thread(target=run, name="sessionizer-start", daemon=True).start()
    return future


def tune_gc() -> None:
    """Each consumed batch is thousands of Message objects made at once, all tracked by Python's
    cyclic collector: with its default thresholds (a collection per 700 new objects) a batch set
    off several collections, and its messages, alive until the batch is fed, survived into the
    older generations, whose collections traverse every object again. The objects made so far
    (modules, config, clients) are frozen out of all collections, and the youngest generation is
    collected per 50,000 new objects. Messages are freed by reference counting as before; this
    only changes how often the collector looks for cycles, which the run loop does not make."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


class TransactionCloser:
    """Sends the input offsets and commits one produced transaction on a thread of its own, so
    that records keep being consumed and fed while the broker confirms it (tens of ms a time)."""

    def __init__(self, producer: Producer, offsets: list[TopicPartition] | None, metadata: Any,
                 tally: Tally | None = None, bound: float | None = None) -> None:
        self.error: BaseException | None = None
        self.tally = tally or Tally()  # what the transaction holds (counted once it commits)
        self.seconds = 0.0  # from the start of this thread to the confirmed commit
        # librdkafka releases the GIL while it blocks: a call past this bound is given up on.
        self._bound = CALL_TIMEOUT_SECONDS + 15 if bound is None else bound
        self._call: str | None = None  # the librdkafka call running now, and since when
        self._call_started = 0.0
        self._thread = threading.Thread(target=self._run, args=(producer, offsets, metadata), name="kafka-commit",
                                        daemon=True)
        self._thread.start()

    def wait(self) -> None:
        """Until it is committed. Raises what the commit raised, or StuckCall when one call
        outlasts its bound (the thread is then left behind; the caller replaces the producer)."""
        while self._thread.is_alive():
            self._thread.join(min(0.5, self._bound))
            call = self._call
            if call is not None and time.monotonic() - self._call_started > self._bound:
                raise StuckCall(call)
        if self.error is not None:
            raise self.error

    def _run(self, producer: Producer, offsets: list[TopicPartition] | None, metadata: Any) -> None:
        started = time.monotonic()
        try:
            if offsets:
                self._timed("send_offsets_to_transaction",
                            lambda: producer.send_offsets_to_transaction(offsets, metadata, CALL_TIMEOUT_SECONDS))
            delay = 0.5
            while True:
                try:
                    self._timed("commit_transaction", lambda: producer.commit_transaction(CALL_TIMEOUT_SECONDS))
                    self.seconds = time.monotonic() - started
                    return
                except KafkaException as failure:
                    error = failure.args[0]
                    if not error.retriable():
                        raise
                    log.warning("commit not confirmed yet (retrying)", extra={"error": error.str(), "in_s": delay})
                    time.sleep(delay)
                    delay = min(delay * 2, BACKOFF_MAX_SECONDS)
        except BaseException as error:  # handed to the thread that waits
            self.error = error

    def _timed(self, name: str, call: Callable[[], Any]) -> None:
        self._call, self._call_started = name, time.monotonic()
        try:
            call()
        finally:
            self._call = None


class StuckCall(Exception):
    """A librdkafka call that did not return within its bound (the call's name)."""
