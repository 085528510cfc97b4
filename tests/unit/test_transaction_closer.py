"""The thread that commits a produced transaction while records keep coming in.

The producer here is a stand-in with librdkafka's two calls: what is tested is the
waiting (results, retries, a call that never returns), not Kafka; tests/kafka runs
the real thing against the broker.
"""

import threading
import time

import pytest
from confluent_kafka import KafkaError, KafkaException

from sessionizer.kafka.runtime import StuckCall, TransactionCloser


class Producer:
    def __init__(self, commit_outcomes=(), block: threading.Event | None = None):
        self.calls: list[str] = []
        self._outcomes = list(commit_outcomes)
        self._block = block

    def send_offsets_to_transaction(self, offsets, metadata, timeout):
        self.calls.append("send_offsets")

    def commit_transaction(self, timeout):
        self.calls.append("commit")
        if self._block is not None:
            self._block.wait()
        if self._outcomes:
            outcome = self._outcomes.pop(0)
            if outcome is not None:
                raise outcome


def retriable() -> KafkaException:
    return KafkaException(KafkaError(KafkaError._TIMED_OUT, "not yet", retriable=True))


def test_offsets_are_sent_then_the_transaction_commits():
    producer = Producer()
    TransactionCloser(producer, ["offsets"], "metadata").wait()
    assert producer.calls == ["send_offsets", "commit"]


def test_without_offsets_only_the_commit_happens():
    producer = Producer()
    TransactionCloser(producer, None, None).wait()
    assert producer.calls == ["commit"]


def test_a_retriable_failure_is_retried_and_a_fatal_one_is_handed_to_the_waiter():
    producer = Producer([retriable(), None])
    TransactionCloser(producer, None, None).wait()
    assert producer.calls == ["commit", "commit"]
    fatal = KafkaException(KafkaError(KafkaError._FENCED, "fenced", fatal=True))
    with pytest.raises(KafkaException, match="fenced"):
        TransactionCloser(Producer([fatal]), None, None).wait()


def test_a_call_that_never_returns_is_given_up_on():
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(StuckCall, match="commit_transaction"):
        TransactionCloser(Producer(block=release), None, None, bound=0.3).wait()
    assert time.monotonic() - started < 2
    release.set()
