"""Reading the group's committed offsets for the start-up state check, without a network."""

from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError, KafkaException

from sessionizer.kafka.topics import committed_offsets


class Reader:
    """Answers `committed` as librdkafka does: one TopicPartition-like answer per partition asked."""

    def __init__(self, answers):
        self.answers = answers

    def committed(self, asked, timeout):
        return [SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=offset, error=error)
                for tp, (offset, error) in zip(asked, self.answers)]


def test_partitions_with_no_commit_are_left_out():
    found = committed_offsets(Reader([(17, None), (-1001, None)]), "in", 2, 1.0)
    assert {p: tp.offset for p, tp in found.items()} == {0: 17}


def test_a_partition_whose_offset_came_back_with_an_error_is_asked_again_not_read_as_no_commit():
    """CI: a process started while a broker restarted read a partition's failed answer as 'no commit',
    found changelog state for it and refused to start (exit 2) though its offsets were there."""
    reader = Reader([(17, None), (-1001, KafkaError(KafkaError.UNSTABLE_OFFSET_COMMIT))])
    with pytest.raises(KafkaException):
        committed_offsets(reader, "in", 2, 1.0)
