"""The forward loop: read committed final records, deliver a batch, then commit its offsets.

At least once: offsets are committed only after Xtremepush acknowledged the batch
(or it was rejected for good and its records reached the dead-letter topic). A
crash redelivers what was not committed; each record keeps its event id, so the
redelivery de-duplicates downstream.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from .. import __version__
from ..core.envelope import dead_letter
from ..kafka.clients import KAFKA_LOG, check_access, new_admin
from ..kafka.topics import TopicError, ensure_dead_letter_topic
from ..monitoring.health import Health
from ..monitoring.metrics import ForwardMetrics, new_registry
from ..monitoring.redact import config_view, redact
from ..monitoring.server import Monitor, serve
from ..monitoring.status import Snapshot
from ..shutdown import STOP
from .settings import ForwardSettings
from .targets import HttpTarget, Item, KafkaTarget, Rejection, Stopped, event_id

log = logging.getLogger("sessionizer.forward")


class Forwarder:
    def __init__(self, settings: ForwardSettings, target: Any = None, stop: threading.Event = STOP) -> None:
        self.settings = settings
        self._stop = stop
        self.target = target or (KafkaTarget(settings, lambda: self.stopping) if settings.kind == "kafka"
                                 else HttpTarget(settings, lambda: self.stopping))
        source = settings.source
        base = {"bootstrap.servers": source.bootstrap_servers, "logger": KAFKA_LOG,
                **source.platform.client_properties(), **source.common}
        self.consumer = Consumer({**base, **source.consumer, "group.id": settings.group_id,
                                  "client.id": f"{source.client_id}-forward", "isolation.level": "read_committed",
                                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        self.dead_letters = Producer({**base, **source.producer, "client.id": f"{source.client_id}-forward-dlq",
                                      "enable.idempotence": True})
        self.delivered = 0
        self.rejected = 0
        self.retries = 0
        self.retries_pending = 0  # retries of the batch being delivered
        self.uncommitted: dict[tuple[str, int], int] = {}  # delivered, offset not yet committed
        self._commit_failed_at: float | None = None
        self.metrics = ForwardMetrics(new_registry(), settings.kind)
        self.health = Health(source.metrics.stuck_after_s) if source.metrics else Health()
        self.monitor = Monitor("sessionizer forward", {
            "mode": "forward", "to": settings.kind, "topics": ",".join(settings.topics), "group": settings.group_id,
            "version": __version__,
        }, self.health, self.metrics.registry, {
            "config file": config_view(source.config),
            "target": redact({"kind": settings.kind, "topic": settings.target_topic, "url": settings.url,
                              **settings.target_properties}),
        })
        self.target.backoff.on_retry = self._on_retry
        self.metrics.info.info({"version": __version__, "mode": "forward", "target": settings.kind,
                                "group": settings.group_id})

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> int:
        check_access(self.settings.source)
        self._ensure_dead_letter_topic()
        log.info("forwarding", extra={"topics": ",".join(self.settings.topics), "to": self.settings.kind,
                                      "group": self.settings.group_id})
        server = serve(self.monitor, self.settings.source.metrics)
        self.health.not_ready("waiting for the consumer group to assign partitions")
        self.consumer.subscribe(self.settings.topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        last_status = last_observed = time.monotonic()
        try:
            while not self.stopping:
                self.health.beat("consuming")
                messages = self.consumer.consume(num_messages=self.settings.max_batch, timeout=0.5)
                read_at = time.monotonic()
                items = self._items(messages)
                if items:
                    try:
                        rejections = self.target.deliver(items)
                    except Stopped:
                        log.info("stopping before this batch was delivered: it will be delivered next time")
                        break
                    self._dead_letter(rejections)
                    self._commit(items)
                    self._delivered(len(items), len(rejections), read_at)
                elif self.uncommitted and time.monotonic() - (self._commit_failed_at or 0) >= 1:
                    self._commit_uncommitted()  # a commit failed: again, though no new record came
                if time.monotonic() - last_status > 10:
                    last_status = time.monotonic()
                    log.info("status", extra={"delivered": self.delivered, "rejected": self.rejected})
                if time.monotonic() - last_observed >= 1:
                    last_observed = time.monotonic()
                    self._observe()
        finally:
            self._commit_uncommitted()
            self.consumer.close()
            if server is not None:
                server.close()
        log.info("stopped", extra={"delivered": self.delivered, "rejected": self.rejected})
        return 0

    def _ensure_dead_letter_topic(self) -> None:
        """Retried, as `sessionizer run` retries its topics: while a broker restarts (a rolling
        restart) Kafka refuses a topic with replication factor 3 until the broker is back."""
        delay = 1.0
        while True:
            self.health.beat("creating the dead-letter topic")
            try:
                return ensure_dead_letter_topic(new_admin(self.settings.source), self.settings.source)
            except (TopicError, KafkaException) as failure:
                error = kafka_error(failure)
                if error is not None and error.fatal():
                    raise
                if self.stopping:
                    raise SystemExit(1) from None
                text = error.str() if error is not None else str(failure)
                if delay == 1.0:  # one line, not one per attempt
                    log.warning("cannot create the dead-letter topic yet: retrying", extra={"error": text})
                self.health.not_ready(f"cannot create the dead-letter topic yet: {text}")
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.retries_pending == 0:
            self.health.set_ready(f"consuming {len(self.consumer.assignment()) or len(partitions)} partition(s)")

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Last chance for offsets a failed commit left: a partition's next owner starts from
        what was committed, and delivers again what was not (at least once)."""
        self._commit_uncommitted()
        for partition in partitions:
            self.uncommitted.pop((partition.topic, partition.partition), None)

    def _on_retry(self, delay: float) -> None:
        """A delivery failed and is retried after `delay`: waiting on purpose, not stuck; not ready meanwhile."""
        self.retries += 1
        self.retries_pending += 1
        self.metrics.retries.inc()
        self.health.beat("retrying a delivery")
        self.health.not_ready(f"delivery to Xtremepush failing: retry {self.retries_pending} in {delay:.1f} s")

    def _delivered(self, count: int, rejected: int, read_at: float) -> None:
        self.delivered += count - rejected
        self.rejected += rejected
        metrics = self.metrics
        metrics.delivered.inc(count - rejected)
        if rejected:
            metrics.rejected.inc(rejected)
            metrics.rejected_batches.inc()
        metrics.latency.observe(time.monotonic() - read_at)
        metrics.last_delivery.set(time.time())
        if self.retries_pending:
            self.retries_pending = 0
            self.health.set_ready("delivering again")

    def _observe(self) -> None:
        self.monitor.throughput.sample(self.delivered)
        self.monitor.snapshot = Snapshot(extra={"delivered": self.delivered, "rejected": self.rejected,
                                                "retries": self.retries})

    def _items(self, messages: list) -> list[Item]:
        items = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error", extra={"error": error.str()})
                continue
            key = message.key().decode("utf-8", "replace") if message.key() is not None else None
            value = message.value() or b""
            try:
                record = orjson.loads(value)
            except orjson.JSONDecodeError:
                record = {}
            items.append(Item(message.topic(), message.partition(), message.offset(), key, value, record,
                              event_id(message.topic(), key, record)))
        return items

    def _dead_letter(self, rejections: list[Rejection]) -> None:
        if not rejections:
            return
        topic = self.settings.source.spec.dead_letter_topic
        for rejection in rejections:
            item = rejection.item
            letter = dead_letter("rejected_by_xtremepush", rejection.reason, None, item.value,
                                 {"topic": item.topic, "partition": item.partition, "offset": item.offset,
                                  "event_id": str(item.event_id)})
            self.dead_letters.produce(topic, letter, item.key.encode() if item.key else None)
            self.monitor.dead_letters.append(letter)
        if self.dead_letters.flush(60) != 0:
            raise RuntimeError(f"dead letters for rejected records not delivered to {topic}: stopping uncommitted")

    def _commit(self, items: list[Item]) -> None:
        for item in items:
            key = (item.topic, item.partition)
            self.uncommitted[key] = max(self.uncommitted.get(key, -1), item.offset + 1)
        self._commit_uncommitted()

    def _commit_uncommitted(self) -> None:
        """Commit what was delivered. While brokers restart a commit can fail (the group coordinator
        moved, a request timed out): the offsets stay and are committed with the next batch, or
        within a second if none comes. Only a fatal error stops the forward."""
        if not self.uncommitted:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in self.uncommitted.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as failure:
            error = kafka_error(failure)
            if error is not None and error.fatal():
                raise
            if self._commit_failed_at is None:  # one line, not one per attempt
                log.warning("cannot commit offsets yet: retrying",
                            extra={"error": error.str() if error is not None else str(failure)})
            self._commit_failed_at = time.monotonic()
            return
        self.uncommitted.clear()
        if self._commit_failed_at is not None:
            self._commit_failed_at = None
            log.info("committing offsets again")


def kafka_error(failure: Exception) -> KafkaError | None:
    """The KafkaError a client call's exception carries, if it carries one."""
    return failure.args[0] if failure.args and isinstance(failure.args[0], KafkaError) else None


def forward(settings: ForwardSettings) -> int:
    return Forwarder(settings).run()
