"""librdkafka settings for each client the runtime uses, from the run settings."""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from ..config import RunSettings

KAFKA_LOG = logging.getLogger("sessionizer.librdkafka")


class RepeatedFaultsToDebug(logging.Filter):
    """librdkafka's own log lines (its `logger` is KAFKA_LOG; it must be a real Logger: the
    client calls it from C). While a broker is away librdkafka repeats its connection failures
    every few seconds, per client and per broker; the runtime says what happened once, in its own
    words, from the error callback. So those lines are kept for `log_level = "debug"`; every
    other line keeps its level."""

    REPEATED = {"FAIL", "ERROR", "REQTMOUT", "CONNECT", "DISCONNECT", "BROKERFAIL", "GETPID", "TXNERR",
                "COORD", "COORDFAIL", "METADATAUPDATE", "FETCHERR", "OFFSET", "NOTLEADER", "COMMITFAIL", "SESSTMOUT", "HEARTBEAT",
                "MAXPOLL", "PARTCNT", "METADATA", "TERMINATE", "ADDPARTS", "ADDOFFSETS", "PURGE", "PARTSTATE"}

    def filter(self, record: logging.LogRecord) -> bool:
        facility = record.args[0] if isinstance(record.args, tuple) and record.args else None
        if facility in self.REPEATED and record.levelno > logging.DEBUG:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return KAFKA_LOG.isEnabledFor(logging.DEBUG)
        return True


KAFKA_LOG.addFilter(RepeatedFaultsToDebug())

# Big enough for a dead letter of a 1 MB input record (its text, escaped).
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


def _base(settings: RunSettings) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": settings.client_id,
        "logger": KAFKA_LOG,
        **settings.platform.client_properties(),
        **settings.common,
    }


def assignment_strategy(consumer: dict[str, Any]) -> str:
    """cooperative-sticky moves only the partitions that change owner, in two rebalances: the
    second starts when the member giving partitions up rejoins. A static member (group.instance.id)
    killed between the two comes back with its cached share and no rebalance, and the partitions it
    was giving up stay with no owner (seen with 3 pods killed 30 times: 4 of 6 partitions unread for
    10 minutes). Static members get the eager protocol, which hands out every partition in one step."""
    return "range" if consumer.get("group.instance.id") else "cooperative-sticky"


def consumer_config(settings: RunSettings) -> dict[str, Any]:
    return {
        **_base(settings),
        "group.id": settings.group_id,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": assignment_strategy(settings.consumer),
        # A killed process's partitions move on (or come back to its restart) after 10 s, not
        # Kafka's 45 s; heartbeats come from librdkafka's own thread, so a long batch never trips it.
        "session.timeout.ms": 10_000,
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
        # A partition's end is only known from an empty fetch, which the broker holds for this long
        # (500 ms by default): every restore paid it once, however small the changelog.
        "fetch.wait.max.ms": 10,
    }


def new_admin(settings: RunSettings, **extra: Any) -> AdminClient:
    """An admin client that can authenticate: with an `oauth_cb`, librdkafka only connects once a
    token is set, and the callback is served by poll(), which admin requests alone never call."""
    admin = AdminClient({**_base(settings), **extra})
    admin.poll(0)
    return admin


# Errors that mean "wrong credentials or not allowed", not "not reachable": no point retrying.
REFUSED = {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._SSL,
           KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED,
           KafkaError.CLUSTER_AUTHORIZATION_FAILED, KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED}


class AccessRefused(RuntimeError):
    """Kafka answered but refused these credentials: a config problem, reported and not retried."""


# A rejected client certificate surfaces as a transport error; its text says what happened.
_TLS_REFUSALS = ("alert bad certificate", "alert unknown ca", "certificate verify failed", "alert certificate",
                 "alert handshake failure", "SSL handshake failed")


def is_refusal(error: KafkaError) -> bool:
    return error.code() in REFUSED or (error.code() == KafkaError._TRANSPORT
                                        and any(text in error.str() for text in _TLS_REFUSALS))


def check_access(settings: RunSettings, wait_seconds: float = 20.0) -> None:
    """Fail fast on wrong credentials. Kafka being unreachable is not decided here: the caller retries."""
    refused: list[str] = []

    def on_error(error: KafkaError) -> None:
        if is_refusal(error):
            refused.append(error.str())

    try:
        admin = new_admin(settings, error_cb=on_error)
    except Exception as error:  # e.g. a token provider that cannot produce a token
        raise AccessRefused(settings.platform.explain_refusal(str(error))) from None
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=2)
            admin.poll(0)
            if not refused:
                return
        except KafkaException as error:
            if is_refusal(error.args[0]):
                refused.append(error.args[0].str())
        admin.poll(0.2)  # delivers the error callbacks, which carry the reason
        if refused:
            raise AccessRefused(settings.platform.explain_refusal(refused[0]))
    KAFKA_LOG.warning("Kafka did not answer the access check in time; going on and retrying",
                      extra={"bootstrap": settings.bootstrap_servers})
