"""The topics the runtime needs: outputs and one compacted changelog per aggregation.

Created when missing, with the input topic's partition count: input partition p keeps
its state in changelog partition p. Where the principal may not create topics, they
must exist already: the runtime says which one is missing.

Before consuming, the state Kafka holds is checked against the input (check_state): a
changelog with another partition count, a changelog deleted while the group has
committed offsets, or a changelog holding state where the group has no offsets (the
input topic recreated, the offsets deleted or expired) would each make the job go on
from wrong or empty state. Kafka Streams refuses the first; sessionizer refuses
all three, naming the topic and what to do, instead of rebuilding anything from empty.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from ..config import RunSettings
from .clients import MAX_MESSAGE_BYTES, restore_consumer_config

log = logging.getLogger("sessionizer.topics")


class TopicError(RuntimeError):
    """A topic cannot be made or read yet: retried."""


class StateMismatch(RuntimeError):
    """Kafka holds state this job must not start from: reported at start, never retried or rebuilt."""


# Committed input offsets carry the changelogs that held their state (offset commit metadata),
# so a changelog deleted later is told apart from an aggregation added to the config since.
_METADATA_PREFIX = "sessionizer changelogs="


def offsets_metadata(settings: RunSettings) -> str:
    return _METADATA_PREFIX + ",".join(settings.changelog_topic(store) for store in store_names(settings))


def changelogs_in(metadata: str | None) -> list[str] | None:
    """The changelogs named by an offset's metadata; None when it was committed by something else."""
    if not metadata or not metadata.startswith(_METADATA_PREFIX):
        return None
    return [name for name in metadata[len(_METADATA_PREFIX):].split(",") if name]


def store_names(settings: RunSettings) -> list[str]:
    """The core's stores, in the names Partition.stores uses."""
    spec = settings.spec
    return (["sessions"] if spec.sessions else []) + [r.topic for r in spec.rolling]


def input_partitions(admin: AdminClient, settings: RunSettings, timeout: float = 10.0) -> int:
    metadata = admin.list_topics(topic=settings.input_topic, timeout=timeout)
    topic = metadata.topics.get(settings.input_topic)
    if topic is None or topic.error is not None or not topic.partitions:
        why = topic.error.str() if topic is not None and topic.error is not None else "not found"
        raise TopicError(f"kafka.input_topic: topic {settings.input_topic!r} is not available ({why})")
    return len(topic.partitions)


def ensure_topics(admin: AdminClient, settings: RunSettings, timeout: float = 30.0) -> int:
    """Check the state Kafka holds, then create missing output and changelog topics; returns
    the input topic's partition count."""
    partitions = input_partitions(admin, settings, timeout)
    existing = admin.list_topics(timeout=timeout).topics
    check_state(admin, settings, partitions, {name: len(t.partitions) for name, t in existing.items()}, timeout)
    wanted: list[NewTopic] = []
    for topic in settings.spec.topics:
        if topic not in existing:
            config = {"max.message.bytes": str(MAX_MESSAGE_BYTES)} if topic == settings.spec.dead_letter_topic else {}
            wanted.append(NewTopic(topic, partitions, config=config))
    for store in store_names(settings):
        topic = settings.changelog_topic(store)
        if topic not in existing:
            wanted.append(NewTopic(topic, partitions, config={
                "cleanup.policy": "compact",
                # Compact often: restores read what compaction leaves.
                "segment.ms": "600000",
                "min.cleanable.dirty.ratio": "0.1",
                "max.message.bytes": str(MAX_MESSAGE_BYTES),
            }))
    _wait("create", "created", admin.create_topics(wanted, request_timeout=timeout) if wanted else {})
    return partitions


def check_state(admin: AdminClient, settings: RunSettings, partitions: int, existing: dict[str, int],
                timeout: float) -> None:
    """Raise StateMismatch when the changelogs or the group's committed offsets do not fit the
    input topic as it is now (`existing`: topic -> partition count)."""
    input_topic, group = settings.input_topic, settings.group_id
    changelogs = [settings.changelog_topic(store) for store in store_names(settings)]
    # Never subscribes: it reads the group's offsets and the changelogs, and joins nothing.
    reader = Consumer({**restore_consumer_config(settings), "group.id": group})
    reader.poll(0)  # serves an `oauth_cb`: without a token the client never connects (as new_admin)
    try:
        _check_state(admin, reader, settings, partitions, existing, changelogs,
                     lambda: committed_offsets(reader, input_topic, partitions, timeout), timeout)
    finally:
        reader.close()


def _check_state(admin: AdminClient, reader: Consumer, settings: RunSettings, partitions: int,
                 existing: dict[str, int], changelogs: list[str],
                 ask_committed: Callable[[], dict[int, TopicPartition]], timeout: float) -> None:
    input_topic, group = settings.input_topic, settings.group_id
    committed = ask_committed()
    reset = (f"stop every `sessionizer run` of group {group!r}, delete its changelog topics "
             f"({', '.join(changelogs)}) and its committed offsets (kafka-consumer-groups --delete-offsets "
             f"--group {group} --topic {input_topic}), then start again; or use a new kafka.group_id")

    for topic in changelogs:
        if topic in existing and existing[topic] != partitions:
            raise StateMismatch(
                f"changelog topic {topic!r} has {existing[topic]} partitions but input topic {input_topic!r} has "
                f"{partitions}: input partition p keeps its state in changelog partition p, so the state would be "
                f"restored from the wrong partitions. If the input was repartitioned on purpose, the keys moved "
                f"between partitions and the open windows cannot follow them: {reset}")

    # The changelogs the committed offsets were made with. Offsets committed by an older version
    # name none: then every changelog missing at once is the tell.
    named = [changelogs_in(tp.metadata) for tp in committed.values()]
    if any(names is not None for names in named):
        expected = {topic for names in named if names for topic in names} & set(changelogs)
    else:
        expected = set(changelogs) if committed and not any(topic in existing for topic in changelogs) else set()
    missing = sorted(topic for topic in expected if topic not in existing)
    if missing:
        raise StateMismatch(
            f"changelog topic {missing[0]!r} does not exist but group {group!r} has committed offsets on "
            f"{input_topic!r}: the changelog was deleted, and going on would rebuild the open sessions and windows "
            f"from empty state (windows lost or cut short). Restore the topic if you can; to start over from "
            f"empty state on purpose: {reset}")

    for topic in changelogs:
        if topic not in existing:
            continue
        ends = end_offsets(admin, topic, list(range(partitions)), timeout)
        orphans = [p for p, end in ends.items() if end > 0 and p not in committed]
        if orphans and has_committed_records(reader, topic, orphans, timeout):
            # Another process of the group may have committed its first transaction after the offsets
            # were read: its changelog records became visible, and its offsets with them. So ask again
            # (a commit still pending answers UNSTABLE_OFFSET_COMMIT: raised, and the check is retried).
            committed = ask_committed()
            orphans = [p for p in orphans if p not in committed]
            if orphans and has_committed_records(reader, topic, orphans, timeout):
                raise StateMismatch(
                    f"changelog topic {topic!r} holds state for input partitions without a committed offset of "
                    f"group {group!r} on {input_topic!r}: the input topic was recreated, or the group's offsets were "
                    f"deleted or expired (offsets.retention.minutes), so the state belongs to records the job would "
                    f"not resume after. To start over from empty state: {reset}")


def has_committed_records(consumer: Consumer, topic: str, partitions: list[int], timeout: float) -> bool:
    """Whether any of these partitions holds a committed record (an aborted first transaction leaves
    only aborted ones); `consumer` reads committed records only."""
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        remaining, deadline = set(partitions), time.monotonic() + timeout
        while remaining and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is None:
                return True
            if error.code() != KafkaError._PARTITION_EOF:
                raise KafkaException(error)
            remaining.discard(message.partition())
        if remaining:
            raise TopicError(f"cannot read changelog topic {topic!r} yet")
        return False
    finally:
        consumer.unassign()


def committed_offsets(reader: Consumer, topic: str, partitions: int, timeout: float) -> dict[int, TopicPartition]:
    """The group's committed offsets on `topic` (partition -> offset with its metadata). Asked
    with a consumer of the group that never joins it: librdkafka 2.12's admin call for this
    (ListConsumerGroupOffsets) crashed the process when the coordinator was still loading."""
    asked = [TopicPartition(topic, p) for p in range(partitions)]
    answered = reader.committed(asked, timeout=timeout)
    # A partition's own error (its offset unknown, e.g. UNSTABLE_OFFSET_COMMIT while a killed process's
    # transaction is open, or the coordinator moving) is not "no commit": raised, so the caller asks again.
    failed = [tp for tp in answered if tp.error is not None]
    if failed:
        raise KafkaException(failed[0].error)
    return {tp.partition: tp for tp in answered if tp.offset >= 0}


def end_offsets(admin: AdminClient, topic: str, partitions: list[int], timeout: float) -> dict[int, int]:
    futures = admin.list_offsets({TopicPartition(topic, p): OffsetSpec.latest() for p in partitions},
                                 request_timeout=timeout)
    return {tp.partition: future.result().offset for tp, future in futures.items()}




def ensure_dead_letter_topic(admin: AdminClient, settings: RunSettings, timeout: float = 30.0) -> None:
    """The dead-letter topic alone (for `sessionizer forward`, which may run before `sessionizer run`)."""
    topic = settings.spec.dead_letter_topic
    if topic in admin.list_topics(timeout=timeout).topics:
        return
    partitions = 1
    try:
        partitions = input_partitions(admin, settings, timeout)
    except TopicError:
        pass
    _wait("create", "created", admin.create_topics(
        [NewTopic(topic, partitions, config={"max.message.bytes": str(MAX_MESSAGE_BYTES)})], request_timeout=timeout))


def _wait(action: str, done: str, futures: dict) -> None:
    for topic, future in futures.items():
        try:
            future.result()
            log.info(f"{done} topic", extra={"topic": topic})
        except KafkaException as error:
            code = error.args[0].code()
            if code == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise TopicError(f"cannot {action} topic {topic!r}: {error.args[0].str()}") from None
