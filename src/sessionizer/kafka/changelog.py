"""Partition state <-> compacted changelog topics (Kafka Streams' store/changelog split).

Input partition p keeps each aggregation's state in partition p of that
aggregation's changelog topic: one record per key (a player, or a
"<start>:<group>" window) whose latest value is its open state, a tombstone
when it has none, and "" for the partition's stream time. The runtime writes
these in the same transaction as the outputs and the input offsets, so the
changelog (read_committed) always matches the committed offsets: restoring it
and resuming from those offsets continues exactly where the last commit left off.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from ..config import RunSettings
from ..core.partition import Partition
from .clients import restore_consumer_config
from .topics import store_names

log = logging.getLogger("sessionizer.changelog")


def restore_partitions(settings: RunSettings, partitions: list[int], make: Callable[[int], Partition],
                       progress: Callable[[], None] = lambda: None) -> tuple[dict[int, Partition], int]:
    """Fresh Partitions for `partitions`, loaded from the changelog up to its last committed record,
    and how many changelog records that took; `progress` is called as batches come in."""
    started = time.monotonic()
    parts = {p: make(p) for p in partitions}
    topic_store = {settings.changelog_topic(store): store for store in store_names(settings)}
    consumer = Consumer(restore_consumer_config(settings))
    consumer.poll(0)  # serves an `oauth_cb`: watermark queries alone never do
    applied = 0
    try:
        assignment = []
        for topic, store in topic_store.items():
            for p in partitions:
                low, high = watermarks(consumer, TopicPartition(topic, p))
                if high > low:
                    assignment.append(TopicPartition(topic, p, OFFSET_BEGINNING))
        remaining = {(tp.topic, tp.partition) for tp in assignment}
        if assignment:
            consumer.assign(assignment)
        last_report = time.monotonic()
        while remaining:
            progress()
            messages = consumer.consume(num_messages=20_000, timeout=0.1)
            at = 0
            while at < len(messages):
                message = messages[at]
                error = message.error()
                if error is None:  # a run of one partition's records, read by the core in one call
                    topic, p = message.topic(), message.partition()
                    stop = parts[p].restore_messages(topic_store[topic], messages, at, topic, p)
                    applied += stop - at
                    at = stop
                    continue
                if error.code() == KafkaError._PARTITION_EOF:
                    remaining.discard((message.topic(), message.partition()))
                elif error.fatal():
                    raise RuntimeError(f"restoring from {message.topic()}: {error.str()}")
                else:
                    log.warning("restore: consumer error", extra={"error": error.str()})
                at += 1
            if remaining and time.monotonic() - last_report > 5:
                last_report = time.monotonic()
                log.info("restore: still reading the changelog (an open transaction of a crashed instance "
                         "holds it until that transaction times out)",
                         extra={"records": applied, "waiting_for": len(remaining)})
    finally:
        consumer.close()
    for part in parts.values():
        part.finish_restore()
    log.info("restored partitions", extra={
        "partitions": ",".join(map(str, sorted(partitions))) or "-", "changelog_records": applied,
        "open_windows": sum(part.open_windows for part in parts.values()),
        "seconds": round(time.monotonic() - started, 3)})
    return parts, applied


def changelog_records(settings: RunSettings, partition: Partition) -> dict[str, list[tuple[str, bytes | None]]]:
    """Changelog topic -> (key, value) records of what changed in `partition` since the last call."""
    return {settings.changelog_topic(store): changes for store, changes in partition.take_changes().items()
            if changes}


def watermarks(consumer: Consumer, partition: TopicPartition, patience: float = 60.0) -> tuple[int, int]:
    """Low and high offsets, asked again while the partition is between leaders (just created,
    or moving after a broker restart) rather than failing the whole assignment."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return consumer.get_watermark_offsets(partition, timeout=10)
        except KafkaException as error:
            if time.monotonic() > deadline:
                raise
            log.warning("restore: cannot read offsets yet: retrying",
                        extra={"topic": partition.topic, "partition": partition.partition, "error": error.args[0].str()})
            time.sleep(0.5)
