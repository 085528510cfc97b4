"""librdkafka settings for each client the runtime uses, from the run settings."""

from __future__ import annotations

import logging
from typing import Any

from ..config import RunSettings

KAFKA_LOG = logging.getLogger("sessionizer.librdkafka")

# Big enough for a dead letter of a 1 MB input record (its text, escaped).
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


def _base(settings: RunSettings) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": settings.client_id,
        "logger": KAFKA_LOG,
        **settings.common,
    }


def consumer_config(settings: RunSettings) -> dict[str, Any]:
    return {
        **_base(settings),
        "group.id": settings.group_id,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "fetch.max.bytes": 64 * 1024 * 1024,
        "max.partition.fetch.bytes": MAX_MESSAGE_BYTES,
        **settings.consumer,
        # Exactly once: offsets go into the transaction; aborted records are never read.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
    }


def producer_config(settings: RunSettings) -> dict[str, Any]:
    return {
        **_base(settings),
        "linger.ms": 20,
        "queue.buffering.max.messages": 1_000_000,
        "message.max.bytes": MAX_MESSAGE_BYTES,
        "partitioner": "murmur2_random",  # the Java clients' partitioner: same key, same partition
        # A crashed instance's open transaction blocks read_committed readers (and restores)
        # until it times out; restarting with the same transactional id aborts it at once.
        "transaction.timeout.ms": 15_000,
        **settings.producer,
        "transactional.id": settings.transactional_id,
        "enable.idempotence": True,
    }


def restore_consumer_config(settings: RunSettings) -> dict[str, Any]:
    return {
        **_base(settings),
        **settings.consumer,
        "client.id": f"{settings.client_id}-restore",
        "group.id": f"{settings.group_id}-restore",  # never joins: partitions are assigned by hand
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "fetch.max.bytes": 64 * 1024 * 1024,
        "max.partition.fetch.bytes": 16 * 1024 * 1024,
    }


def admin_config(settings: RunSettings) -> dict[str, Any]:
    return _base(settings)
