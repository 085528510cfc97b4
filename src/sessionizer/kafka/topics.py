"""The topics the runtime needs: outputs and one compacted changelog per aggregation.

Created when missing (with the input topic's partition count; a changelog must
have at least as many partitions as the input, since input partition p keeps its
state in changelog partition p). Where the principal may not create topics, they
must exist already: the runtime says which one is missing.
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from ..config import RunSettings
from .clients import MAX_MESSAGE_BYTES

log = logging.getLogger("sessionizer.topics")


class TopicError(RuntimeError):
    pass


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
    """Create missing output and changelog topics; returns the input topic's partition count."""
    partitions = input_partitions(admin, settings, timeout)
    existing = admin.list_topics(timeout=timeout).topics
    wanted: list[NewTopic] = []
    for topic in settings.spec.topics:
        if topic not in existing:
            config = {"max.message.bytes": str(MAX_MESSAGE_BYTES)} if topic == settings.spec.dead_letter_topic else {}
            wanted.append(NewTopic(topic, partitions, config=config))
    grow: list[NewPartitions] = []
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
        elif len(existing[topic].partitions) < partitions:
            grow.append(NewPartitions(topic, partitions))
    _wait("create", "created", admin.create_topics(wanted, request_timeout=timeout) if wanted else {})
    _wait("add partitions to", "grew", admin.create_partitions(grow, request_timeout=timeout) if grow else {})
    return partitions


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
